import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from nanoedx_dataset.simulate import blur

AVX512 = ("AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL "
          "AVX512_SPR X86_V4")
# widths whose numpy.exp kernels differ in their last bits with and without AVX-512
SIGMAS = (0.31, 0.43, 0.7, 1.3, 1.41)
SCRIPT = f"""
import sys, numpy as np
from nanoedx_dataset.simulate import blur, haadf, scenes
a = np.random.default_rng(0).random((3, 40, 40))
out = [blur.gaussian(a, (0, s, s)).tobytes().hex() for s in {SIGMAS}]
proj = np.random.default_rng(1).random((2, 4, 24, 24)) * 30
for i in range(12):  # the HAADF draws (log-uniform peak, Z**gamma) and images
    image, params = haadf.simulate(proj, [-60, -20, 20, 60], haadf.HaadfOptions(), 0, i)
    out += [image.tobytes().hex(), params]
out += [scenes.draw_scene(0, i).to_json() for i in range(3)]  # log-uniform extents
sys.stdout.write("\\n".join(out))
"""
@pytest.mark.parametrize("sigma, mode, truncate", [((0, 0.7, 0.7), "reflect", 4.0),
                                                   (1.3, "constant", 3.0), (2.5, "wrap", 4.0)])
def test_gaussian_is_scipys_filter(sigma, mode, truncate):
    a = np.random.default_rng(1).random((5, 30, 31)).astype(np.float32)
    ours = blur.gaussian(a, sigma, mode=mode, truncate=truncate)
    theirs = ndimage.gaussian_filter(a, sigma, mode=mode, truncate=truncate)
    assert ours.dtype == a.dtype
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    assert blur.kernel(1.3, 3.0).sum() == pytest.approx(1.0) and len(blur.kernel(1.3, 3.0)) == 9


def test_simulations_give_the_same_bytes_whatever_simd_numpy_uses():
    # numpy computes exp, log and pow with AVX-512 code where the CPU has it, with other code
    # where not, and the two differ in last bits; a process told to avoid AVX-512 must blur,
    # draw HAADF images and scenes to the same bytes (on a CPU without AVX-512 both
    # processes take the same path and the check holds trivially)
    run = lambda env: subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True,  # noqa: E731
                                     capture_output=True, text=True).stdout
    here = run(dict(os.environ))
    without = run({**os.environ, "NPY_DISABLE_CPU_FEATURES": AVX512})
    assert here == without and len(here.splitlines()) == len(SIGMAS) + 2 * 12 + 3
