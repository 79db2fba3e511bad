"""Learnable orthogonal down/upsampling: orthogonality, exact inverse, gradients."""

import pytest
import torch

from revmed.nn import Inverted, OrthogonalResampling3d, haar_matrix


def operator_matrix(fn, shape):
    """The matrix of a linear map on tensors of ``shape``, built from basis vectors."""
    n = torch.Size(shape).numel()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape[1:])
    return fn(basis).reshape(n, -1).T


@pytest.mark.parametrize("init", ["haar", "shuffle", "random"])
def test_downsampling_is_orthogonal(init):
    torch.manual_seed(0)
    down = OrthogonalResampling3d(2, init=init).double()
    D = operator_matrix(down, (1, 2, 4, 4, 4))  # (2 * 8 * 2**3) x (2 * 4**3)
    assert D.shape == (128, 128)
    torch.testing.assert_close(D.T @ D, torch.eye(128, dtype=torch.float64), atol=1e-5, rtol=0)


def test_float32_kernel_matrix_is_orthogonal_to_1e_5():
    A = OrthogonalResampling3d(3, init="random").kernel_matrix()
    eye = torch.eye(8).expand(3, 8, 8)
    torch.testing.assert_close(A.transpose(-1, -2) @ A, eye, atol=1e-5, rtol=0)


def test_upsampling_is_the_adjoint():
    down = OrthogonalResampling3d(2, init="random").double()
    D = operator_matrix(down, (1, 2, 4, 4, 4))
    U = operator_matrix(down.inverse, (1, 16, 2, 2, 2))
    torch.testing.assert_close(U, D.T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("init", ["haar", "random"])
def test_exact_inverse(init):
    down = OrthogonalResampling3d(3, init=init)
    x = torch.randn(2, 3, 8, 6, 4)
    y = down(x)
    assert y.shape == (2, 24, 4, 3, 2)
    assert (down.inverse(y) - x).abs().max() < 1e-5
    up = Inverted(down)
    assert (up.inverse(up(y)) - y).abs().max() < 1e-5


def test_haar_initialisation_is_the_haar_transform():
    down = OrthogonalResampling3d(1).double()
    torch.testing.assert_close(down.kernel_matrix()[0], haar_matrix(), atol=1e-6, rtol=0)
    x = torch.arange(8, dtype=torch.float64).reshape(1, 1, 2, 2, 2)
    y = down(x).flatten()
    assert y[0].item() == pytest.approx(x.sum().item() / 8 ** 0.5, abs=1e-5)  # approximation
    # detail along depth: the two slices differ by 4 in each of their 4 voxels
    assert y[4].item() == pytest.approx(-(4 * 4) / 8 ** 0.5, abs=1e-5)


def test_gradcheck():
    """Gradients with respect to the input and to θ, for both directions (float64)."""
    torch.manual_seed(0)
    down = OrthogonalResampling3d(2, init="random").double()
    up = Inverted(down)
    theta = down.theta.detach().clone().requires_grad_()
    x = torch.randn(1, 2, 2, 2, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 16, 1, 1, 2, dtype=torch.float64, requires_grad=True)

    def down_fn(x, theta):
        return torch.func.functional_call(down, {"theta": theta}, (x,))

    def up_fn(y, theta):
        return torch.func.functional_call(up, {"block.theta": theta}, (y,))

    assert torch.autograd.gradcheck(down_fn, (x, theta))
    assert torch.autograd.gradcheck(up_fn, (y, theta))


def test_autocast_keeps_it_exact():
    down = OrthogonalResampling3d(2, init="random")
    x = torch.randn(1, 2, 4, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = down(x)
        assert y.dtype == torch.float32
        assert (down.inverse(y) - x).abs().max() < 1e-5


def test_rejects_bad_shapes_and_init():
    down = OrthogonalResampling3d(2)
    with pytest.raises(ValueError):
        down(torch.zeros(1, 2, 3, 4, 4))
    with pytest.raises(ValueError):
        down.inverse(torch.zeros(1, 8, 2, 2, 2))
    with pytest.raises(ValueError):
        OrthogonalResampling3d(2, init="cayley")
