"""The diffusion side: priors, the noise schedule, the guided sampler, DIG weights and the guidance."""
