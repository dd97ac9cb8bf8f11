"""Tomographic reconstruction of (denoised) tilt series: EM and SIRT (:mod:`.em`)."""
