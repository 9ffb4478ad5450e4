"""One time step of an LSTM and of a GRU cell, forward and backward, on any Array API namespace:
the element-wise gate math between the per-step matrix products (the references inside the hot ops
``lstm_sequence``, the LSTM's loop over time, and ``gru_cell``; a backend may fuse them). σ is
``_gate``. Gate order and formulas are PyTorch's. ``a`` is the step's pre-activation: the input part ``x W + b`` plus ``h U``.

LSTM, a = [a_i, a_f, a_g, a_o] (N, 4H):
    i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o),   c' = f ∘ c + i ∘ g,   h' = o ∘ tanh(c')
  backward, from dh' and dc' (the cell gradient arriving from step t + 1):
    dc = dh' ∘ o ∘ (1 − tanh²c') + dc',   do = dh' ∘ tanh c'
    da = [dc ∘ g ∘ i(1 − i), dc ∘ c ∘ f(1 − f), dc ∘ i ∘ (1 − g²), do ∘ o(1 − o)],   ∂J/∂c = dc ∘ f

GRU, input part x W + b = [x_r, x_z, x_n], recurrent part h U = [u_r, u_z, u_n] (each N, H):
    r = σ(x_r + u_r), z = σ(x_z + u_z), n = tanh(x_n + r ∘ (u_n + b_hn)),   h' = (1 − z) ∘ n + z ∘ h
  backward, from dh':
    dn = dh' ∘ (1 − z) ∘ (1 − n²),   dz = dh' ∘ (h − n) ∘ z(1 − z),   dr = dn ∘ (u_n + b_hn) ∘ r(1 − r)
    d(x W + b) = [dr, dz, dn],   d(h U + [0, 0, b_hn]) = [dr, dz, dn ∘ r],   ∂J/∂h (direct) = dh' ∘ z
"""

from __future__ import annotations

from typing import Any

Array = Any


def _gate(v: Array, xp: Any) -> Array:
    """σ(v) = (1 + tanh(v/2)) / 2: one vectorised tanh, where the general sigmoid's stable form costs
    several passes (9× the time on NumPy float32). Exact in absolute terms, which is what a gate needs
    (it multiplies other values); the output sigmoid keeps the form that is exact relative to tiny σ.
    The numba backend fuses each cell at float32 (vectorised loops with a rational tanh, and the gate
    as 1 / (1 + e^−v) with a polynomial exp: an LSTM step forward and back about 3× faster than these
    ufuncs at 64 × 128); at float64 numba's tanh is a scalar call, so it runs this reference there, as
    the other CPU backends do."""
    return 0.5 + 0.5 * xp.tanh(0.5 * v)


def _blocks(saved: Array, units: int, count: int) -> list[Array]:
    return [saved[:, k * units : (k + 1) * units] for k in range(count)]


def lstm_cell(a: Array, c: Array, units: int, xp: Any) -> tuple[Array, Array, Array]:
    """(h', c', saved) of one step (H = ``units``, given: an exported graph's shapes are symbolic);
    ``saved`` = [i, f, g, o, tanh c'] side by side (N, 5H), for the backward step."""
    i, f, o = (_gate(a[:, k * units : (k + 1) * units], xp) for k in (0, 1, 3))
    g = xp.tanh(a[:, 2 * units : 3 * units])
    c_new = f * c + i * g
    tanh_c = xp.tanh(c_new)
    return o * tanh_c, c_new, xp.concat([i, f, g, o, tanh_c], axis=-1)


def lstm_cell_backward(dh: Array, dc_next: Array, c: Array, saved: Array, xp: Any) -> tuple[Array, Array]:
    """(da (N, 4H), ∂J/∂c of the previous step) from dh' and the cell gradient from the next step."""
    i, f, g, o, tanh_c = _blocks(saved, c.shape[-1], 5)
    dc = dh * o * (1.0 - tanh_c * tanh_c) + dc_next
    da = xp.concat([dc * g * i * (1.0 - i), dc * c * f * (1.0 - f), dc * i * (1.0 - g * g),
                    dh * tanh_c * o * (1.0 - o)], axis=-1)
    return da, dc * f


def gru_cell(x_part: Array, u: Array, b_hn: Array, h: Array, units: int, xp: Any) -> tuple[Array, Any]:
    """(h', saved) of one step; ``x_part`` = x W + b (N, 3H), ``u`` = h U (N, 3H), H = ``units``."""
    r = _gate(x_part[:, :units] + u[:, :units], xp)
    z = _gate(x_part[:, units : 2 * units] + u[:, units : 2 * units], xp)
    hidden_n = u[:, 2 * units :] + b_hn  # u_n + b_hn
    n = xp.tanh(x_part[:, 2 * units :] + r * hidden_n)
    return (1.0 - z) * n + z * h, xp.concat([r, z, n, hidden_n], axis=-1)


def gru_cell_backward(dh: Array, h: Array, saved: Array, xp: Any) -> tuple[Array, Array, Array]:
    """(d(x W + b), d(h U) with its n part ∘ r, ∂J/∂h through z) of one step, from dh';
    ``saved`` = [r, z, n, h U_n + b_hn] side by side (N, 4H)."""
    r, z, n, hidden_n = _blocks(saved, h.shape[-1], 4)
    dn = dh * (1.0 - z) * (1.0 - n * n)
    dz = dh * (h - n) * z * (1.0 - z)
    dr = dn * hidden_n * r * (1.0 - r)
    return xp.concat([dr, dz, dn], axis=-1), xp.concat([dr, dz, dn * r], axis=-1), dh * z
