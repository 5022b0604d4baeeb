"""The Triton kernels of :mod:`qmf_lite.fused` (imported only when a fused step runs; needs Triton).

Plain functions here; :func:`qmf_lite.fused._kernel` wraps them with ``triton.jit`` on first use,
once for the compiled mode and once for the interpreter (``TRITON_INTERPRET=1``), which Triton
reads when a function is wrapped. They are module-level functions so that every Triton release
resolves ``tl`` as a global of this module.
"""
import triton.language as tl


def rank_update(p_ptr, v_ptr, a_ptr, g_ptr, K, N, R, lr, momentum,
                s_pb, s_pk, s_pn, s_ab, s_ar, s_ak, s_gb, s_gr, s_gn,
                HAS_V: tl.constexpr, FIRST: tl.constexpr, DOT: tl.constexpr,
                BK: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr):
    # one (BK, BN) tile of network `net`: acc = a[:, rk]^T g[:, rn], then the SGD update
    rk = tl.program_id(0) * BK + tl.arange(0, BK)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    net = tl.program_id(2).to(tl.int64)
    acc = tl.full((BK, BN), 0.0, tl.float32)           # tl.full: a builtin, also in the interpreter
    for r0 in range(0, R, BR):
        rr = r0 + tl.arange(0, BR)
        a_t = tl.load(a_ptr + net * s_ab + rr[None, :] * s_ar + rk[:, None] * s_ak,
                      mask=(rr[None, :] < R) & (rk[:, None] < K), other=0.0)
        g = tl.load(g_ptr + net * s_gb + rr[:, None] * s_gr + rn[None, :] * s_gn,
                    mask=(rr[:, None] < R) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a_t, g, acc, input_precision=DOT)
    inside = (rk[:, None] < K) & (rn[None, :] < N)
    offset = net * s_pb + rk[:, None] * s_pk + rn[None, :] * s_pn
    p = tl.load(p_ptr + offset, mask=inside)
    if HAS_V:
        if FIRST:
            v = acc
        else:
            v = tl.load(v_ptr + offset, mask=inside) * momentum + acc
        tl.store(v_ptr + offset, v, mask=inside)
    else:
        v = acc
    tl.store(p_ptr + offset, p - lr * v, mask=inside)


def staircase(h_ptr, out_ptr, mask_ptr, thr_ptr, val_ptr, clip_ptr, M, T,
              HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    # values[net, #{k: thresholds[net, k] <= x}] (NaN in, NaN out, as the lookup), and 1{|x| <= clip}
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    net = tl.program_id(1).to(tl.int64)
    inside = i < M
    x = tl.load(h_ptr + net * M + i, mask=inside, other=0.0)
    count = tl.full((BLOCK,), 0, tl.int32)
    for k in range(T):
        count += (x >= tl.load(thr_ptr + net * T + k)).to(tl.int32)
    level = tl.load(val_ptr + net * (T + 1) + count, mask=inside)
    tl.store(out_ptr + net * M + i, tl.where(x != x, x, level), mask=inside)
    if HAS_MASK:
        tl.store(mask_ptr + net * M + i, (tl.abs(x) <= tl.load(clip_ptr + net)).to(tl.int8), mask=inside)


def matmul(a_ptr, b_ptr, bias_ptr, c_ptr, M, N, K, s_ab, s_am, s_ak, s_bb, s_bk, s_bn, s_cb, s_cm, s_cn,
           s_biasb, s_biasn, HAS_BIAS: tl.constexpr, DOT: tl.constexpr,
           BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # one (BM, BN) tile of network `net`: c = a @ b (+ bias, a row broadcast over the BM rows)
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    net = tl.program_id(2).to(tl.int64)
    acc = tl.full((BM, BN), 0.0, tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        a = tl.load(a_ptr + net * s_ab + rm[:, None] * s_am + rk[None, :] * s_ak,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        b = tl.load(b_ptr + net * s_bb + rk[:, None] * s_bk + rn[None, :] * s_bn,
                    mask=(rk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc, input_precision=DOT)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + net * s_biasb + rn * s_biasn, mask=rn < N, other=0.0)[None, :]
    tl.store(c_ptr + net * s_cb + rm[:, None] * s_cm + rn[None, :] * s_cn, acc,
             mask=(rm[:, None] < M) & (rn[None, :] < N))
