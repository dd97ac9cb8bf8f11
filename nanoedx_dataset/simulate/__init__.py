"""The physics: shape families, particle specs, voxelization backends, tilt-series projection
and the EDX noise model. Arrays in, arrays out; nothing here touches a file but the meshes a
backend is asked to save."""
