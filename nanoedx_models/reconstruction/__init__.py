"""Tomography of (denoised) tilt series: EM and SIRT (:mod:`.em`), and the alignment of a
measured series to the tilt axis (:mod:`.align`)."""
