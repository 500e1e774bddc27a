from glob import glob

from setuptools import find_packages, setup

package_name = "dig2dig_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "benchmarks"]),
    package_data={package_name: ["data/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.py")),
        (f"share/{package_name}/config", glob("config/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="dig2dig_ros developers",
    maintainer_email="dig2dig-ros@example.com",
    description="Live infrared + visible image fusion with diffusion information gains (Dig2DIG) for ROS 2.",
    license="MIT",
    entry_points={
        "console_scripts": [
            "dig2dig = dig2dig_ros.commands.cli:main",
            "dig2dig-train-prior = dig2dig_ros.commands.train_prior:main",
            "dig2dig-ros = dig2dig_ros.commands.ros_cli:main",
            "dig2dig_fusion = dig2dig_ros.ros.fusion_node:main",
            "dig2dig_detector = dig2dig_ros.ros.detector_node:main",
            "dig2dig-convert-yolov5 = dig2dig_ros.core.detection.convert:main",
            "dig2dig_web_view = dig2dig_ros.view.web_view_node:main",
            "dig2dig_foxglove_bridge = dig2dig_ros.view.foxglove_node:main",
        ],
    },
)
