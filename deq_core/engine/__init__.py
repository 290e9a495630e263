"""The equilibrium engine: modalities, configs, encoders, the fusion models, solvers,
implicit differentiation, recorded trajectories and model folders."""
