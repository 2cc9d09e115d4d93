# SPDX-License-Identifier: Apache-2.0
"""The native CPU MSDA kernel (detr_deploy.runtime.msda_native, built from plugins/src/msdaMath.h) against the
PyTorch grid_sample reference."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from detr_deploy.models.deformable_attention import ms_deform_attn_core
from detr_deploy.runtime import msda_native

from conftest import msda_case

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def native():
    lib = msda_native.load_native()
    if lib is None:
        pytest.skip(f"native MSDA library unavailable: {msda_native.load_error()}")
    return lib


def _starts(shapes):
    return np.concatenate([[0], np.cumsum([h * w for h, w in shapes])[:-1]]).astype(np.int32)


def _native(value, shapes, locations, weights, num_threads=0):
    return msda_native.msda_native(value.numpy(), np.array(shapes, np.int32), _starts(shapes), locations.numpy(),
                                   weights.numpy(), num_threads=num_threads)


def _compare(label, value, shapes, locations, weights, num_threads=2):
    ref = ms_deform_attn_core(value, shapes, None, locations, weights).numpy()
    out = _native(value, shapes, locations, weights, num_threads)
    assert out.shape == ref.shape and out.dtype == np.float32
    err = float(np.abs(out - ref).max())
    print(f"\nnative MSDA vs PyTorch grid_sample core, {label}: max |diff| = {err:.2e}")
    assert np.isfinite(out).all()
    assert err <= TOLERANCE
    return out


CASES = {  # id: (seed, level shapes, N, M, D, Lq, P)
    "deformable-detr-4-levels": (0, [(13, 17), (7, 9), (4, 5), (2, 3)], 2, 8, 32, 40, 4),
    "single-scale": (1, [(25, 38)], 1, 8, 32, 100, 4),
    "6-levels-1-pixel-maps": (2, [(6, 7), (3, 4), (2, 2), (1, 1), (5, 1), (1, 9)], 1, 3, 5, 17, 7),
    "large-D": (3, [(9, 11), (5, 6)], 3, 1, 300, 11, 2),
    "D1-P1": (4, [(4, 4)], 1, 2, 1, 5, 1),
    "odd-D-many-queries": (6, [(10, 12), (5, 6), (3, 3)], 2, 4, 7, 257, 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_equals_pytorch_reference(native, case):
    seed, shapes, n, m, d, lq, points = CASES[case]
    value, locations, weights = msda_case(seed, shapes, n, m, d, lq, points)
    _compare(f"{case} shapes {shapes} N={n} M={m} D={d} Lq={lq} P={points}", value, shapes, locations, weights)


def test_native_edges_corners_centres_and_outside(native):
    shapes = [(5, 7), (3, 4), (1, 1)]
    value, locations, weights = msda_case(9, shapes, 1, 2, 3, 16, 4)
    special = [  # (x, y): edges, corners, pixel centres, just and far outside, exactly one pixel outside
        (0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (1.0, 0.5), (0.5, 0.0), (0.5 / 7, 0.5 / 5),
        (3.5 / 7, 2.5 / 5), (6.5 / 7, 4.5 / 5), (-0.5 / 7, 0.5), (1 + 0.5 / 7, 0.5), (-0.3, 1.7), (2.0, -1.0),
        (-1.0, -1.0), (0.25, 0.75), (0.5, 0.5)]
    for q, (x, y) in enumerate(special):
        locations[0, q, :, :, :, 0] = x
        locations[0, q, :, :, :, 1] = y
    out = _compare("edges / corners / pixel centres / outside", value, shapes, locations, weights)
    # far outside every map: exactly zero
    np.testing.assert_array_equal(out[0, [11, 12, 13]], 0.0)


def test_native_border_reads_half_a_pixel_and_centres_read_the_pixel(native):
    # value [1, 2 pixels, 1 head, 1 channel] = (1, 4) in a 1 x 2 map
    value = np.array([1.0, 4.0], np.float32).reshape(1, 2, 1, 1)
    cases = {(1.0, 0.5): 2.0,    # the right border: half of the last pixel blended with the zero padding
             (0.25, 0.5): 1.0,   # the centre of pixel 0
             (0.75, 0.5): 4.0,   # the centre of pixel 1
             (0.5, 0.5): 2.5}    # halfway between the two
    for (x, y), expected in cases.items():
        loc = np.array([x, y], np.float32).reshape(1, 1, 1, 1, 1, 2)
        got = msda_native.msda_native(value, np.array([[1, 2]], np.int32), np.array([0], np.int32), loc,
                                      np.ones((1, 1, 1, 1, 1), np.float32))
        assert got.item() == pytest.approx(expected, abs=1e-6), (x, y)


@pytest.mark.parametrize("case", ["deformable-detr-4-levels", "odd-D-many-queries"])
def test_thread_count_does_not_change_a_bit(native, case):
    seed, shapes, n, m, d, lq, points = CASES[case]
    value, locations, weights = msda_case(seed, shapes, n, m, d, lq, points)
    one = _native(value, shapes, locations, weights, num_threads=1)
    for threads in (2, 3, 0):
        other = _native(value, shapes, locations, weights, num_threads=threads)
        assert np.array_equal(one.view(np.uint32), other.view(np.uint32)), threads


def test_non_contiguous_and_other_dtypes_are_converted(native):
    seed, shapes, n, m, d, lq, points = CASES["deformable-detr-4-levels"]
    value, locations, weights = msda_case(seed, shapes, n, m, d, lq, points)
    expected = _native(value, shapes, locations, weights)
    # a transposed view, float64 and int64 inputs: copied to contiguous float32 / int32 by the wrapper
    value_t = np.ascontiguousarray(value.numpy().transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    assert not value_t.flags.c_contiguous
    got = msda_native.msda_native(value_t, np.array(shapes, np.int64), _starts(shapes).astype(np.int64),
                                  locations.numpy().astype(np.float64), weights.numpy(), num_threads=2)
    # float64 locations are rounded to float32 first: the same values as float32 inputs
    np.testing.assert_array_equal(got, expected)


def test_invalid_shapes_are_refused(native):
    value = np.zeros((1, 10, 2, 4), np.float32)
    loc = np.zeros((1, 3, 2, 1, 2, 2), np.float32)
    weights = np.zeros((1, 3, 2, 1, 2), np.float32)
    with pytest.raises(ValueError, match="level outside value"):
        msda_native.msda_native(value, np.array([[4, 4]], np.int32), np.array([0], np.int32), loc, weights)
    with pytest.raises(ValueError, match="do not match"):
        msda_native.msda_native(value, np.array([[2, 5]], np.int32), np.array([0], np.int32), loc, weights[:, :2])
    empty = msda_native.msda_native(value, np.array([[2, 5]], np.int32), np.array([0], np.int32), loc[:, :0],
                                    weights[:, :0])
    assert empty.shape == (1, 0, 8)


def test_library_reports_the_abi_the_loader_expects(native):
    assert native.detr_msda_cpu_version() == msda_native.ABI_VERSION


def test_stale_or_missing_library_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(msda_native.ENV_VAR, str(tmp_path / "missing.so"))
    assert msda_native.native_library_path() == tmp_path / "missing.so"
    assert msda_native.load_native() is None
    assert "cmake -S plugins" in msda_native.load_error()
    with pytest.raises(RuntimeError, match="cmake -S plugins"):
        msda_native.msda_native(np.zeros((1, 1, 1, 1), np.float32), np.ones((1, 2), np.int32),
                                np.zeros(1, np.int32), np.zeros((1, 1, 1, 1, 1, 2), np.float32),
                                np.zeros((1, 1, 1, 1, 1), np.float32))


def test_module_imports_without_torch():
    code = ("import sys; import detr_deploy.runtime.msda_native as m; m.load_native(); "
            "bad = [name for name in ('torch', 'torchvision', 'timm') if name in sys.modules]; "
            "assert not bad, bad; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
