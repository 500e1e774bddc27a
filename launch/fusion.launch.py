"""ros2 launch dig2dig_ros fusion.launch.py [params_file:=FILE] [namespace:=NS] [use_sim_time:=true]
[detect:=true] [rviz:=true] [prior:=...] [device:=...] [working_size:=N] [ir_homography:=auto|H|FILE]
[ir_topic:=...] [visible_topic:=...]
[view:=true view_port:=8080] [foxglove:=true foxglove_port:=8765]

The nodes, their parameters and remaps come from dig2dig_ros.ros.graph, the same description that
`dig2dig-ros launch` (the runner for pip installs without `launch`) starts. The Fast DDS profile variables are
set only where the user has not chosen a profile (graph.profile_environment, as the runner does).
"""

import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dig2dig_ros.ros.graph import LAUNCH_ARGUMENTS, build_graph, package_share, profile_environment


def _nodes(context):
    given = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    actions = [
        Node(
            package="dig2dig_ros",
            executable=spec.executable,
            name=spec.name,
            namespace=spec.namespace,
            parameters=[*spec.params_files, spec.parameters],
            remappings=spec.remappings,
            ros_arguments=["--log-level", spec.log_level],
            output="screen",
        )
        for spec in build_graph(given)
    ]
    if given["rviz"].lower() == "true":
        rviz_config = str(package_share() / "config" / "fusion.rviz")
        actions.append(Node(package="rviz2", executable="rviz2", arguments=["-d", rviz_config], output="screen"))
    return actions


def generate_launch_description():
    return LaunchDescription([
        *[SetEnvironmentVariable(name, value) for name, value in profile_environment(dict(os.environ)).items()],
        *[DeclareLaunchArgument(name, default_value=arg.default, description=arg.description)
          for name, arg in LAUNCH_ARGUMENTS.items()],
        OpaqueFunction(function=_nodes),
    ])
