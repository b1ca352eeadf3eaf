"""A tiny Llama (Hugging Face's LlamaForCausalLM architecture) pretrained with
arithmetic whose result does not depend on the CPU, its vector width or its
thread count: the same bits on any x86-64 machine (for a given torch).

Why: make_demo.py pretrains the demo base model when it is built. With
ordinary torch ops, every matmul and reduction adds in an order chosen for the
CPU (MKL and ATen pick SSE, AVX2 or AVX-512 code at run time, and split work
across threads), exp/log/cos come from SLEEF or libm depending on the same
choice (torch's normal_ init included), and float32 sqrt from MKL's vsSqrt,
whose last bit depends on MKL's code path. Last-bit differences grow over 500
Adam steps into another model, and another fine-tune result.

How: only these operations, on CPU:
  - Elementwise +, -, *, /, round, min/max, where, comparisons, frexp, dtype
    conversions, bit shifts, copies and indexing, in float32 (float64 inside
    sqrt). IEEE 754 rounds each one correctly, so scalar, SSE, AVX2 and
    AVX-512 kernels give the same bits. Never a fused op (addcmul, lerp, add
    with alpha): vectorised kernels use an FMA where scalar ones round twice.
  - Sums (matmul, sum over a dim, index_add) in float64 of operands first
    rounded to an integer grid (Quantized: q * 2**s, |q| <= 2**bits, one
    power-of-two scale per tensor) coarse enough that every partial sum is an
    integer below 2**53. Such a sum is exact, so no order (BLAS blocking,
    vector width, threads, FMA or not) can change it; it is then rounded once
    to float32. Matmul operands keep 20 bits (bf16 has 8).
  - exp and log as polynomials, sqrt as Newton's iteration, made of the
    operations above (never torch.exp/log/sqrt, libm, SLEEF or MKL's VML);
    RoPE's cos/sin from Python's decimal module.
  - Initial weights: integers from Python's Mersenne Twister times 2**-20.
exact_llama_test.py checks the loss and every gradient against transformers'
model; tools/demo/check_reproducible.sh checks the bits under several CPU
settings.

Shapes: B batch, T tokens, C hidden, H heads, KV key/value heads, D head dim,
F MLP width, V vocab, N = B*T.
"""
import math
import random
from decimal import Decimal, getcontext, localcontext

import torch

F32, F64 = torch.float32, torch.float64
MATMUL_BITS = 20                       # bits of each quantized matmul operand
MAX_K = 1 << (53 - 2 * MATMUL_BITS)    # longest exact dot product: 8192 terms


# ---- Exact and correctly rounded arithmetic -------------------------------------

def pow2(e):
    return math.ldexp(1.0, e)


class Quantized:
    """q * 2**s: q an integer-valued float64 tensor with |q| <= 2**bits, one
    power-of-two scale for the whole tensor (from its largest magnitude)."""
    __slots__ = ("q", "s")

    def __init__(self, x, bits=None, s=None):
        if s is not None:                      # already quantized
            self.q, self.s = x, s
            return
        lo, hi = torch.aminmax(x)
        m = max(-float(lo), float(hi))
        if m == 0.0:
            self.q, self.s = torch.zeros_like(x, dtype=F64), 0
            return
        e = math.frexp(m)[1]                   # max |x| < 2**e
        if bits - e > 126:                     # 2**(bits - e) is not a float32
            x = x.to(F64)
        # x * 2**(bits - e) is exact (a power of two, |result| < 2**bits, no
        # underflow since bits >= e), and so is rounding it and widening it.
        self.q, self.s = (x * pow2(bits - e)).round_().to(F64), e - bits

    @property
    def T(self):                               # transpose of the last two dims
        return Quantized(self.q.transpose(-1, -2), s=self.s)

    def value(self):
        return (self.q * pow2(self.s)).to(F32)


def q20(x):
    """x as a matmul operand (20 bits)."""
    return Quantized(x, MATMUL_BITS)


def mm(a, b):
    """a @ b (batched as torch.matmul) of two q20 operands, rounded once to
    float32: exact in float64 before that, since every partial sum is an
    integer below 2**53 whatever the order."""
    assert a.q.shape[-1] <= MAX_K, a.q.shape
    return torch.matmul(a.q, b.q).mul_(pow2(a.s + b.s)).to(F32)


def matmul(a, b):
    return mm(q20(a), q20(b))


def _sum_bits(n):
    return min(52, 53 - (n - 1).bit_length())    # n * 2**bits <= 2**53


def xsum(x, dim, keepdim=False):
    """x.sum(dim) rounded once to float32, the sum exact on x rounded to
    53 - ceil(log2 n) bits (more than float32's 24 when n < 2**28)."""
    q = Quantized(x, _sum_bits(x.shape[dim]))
    return q.q.sum(dim, keepdim=keepdim).mul_(pow2(q.s)).to(F32)


def index_add(n_rows, index, x):
    """zeros(n_rows, C).index_add_(0, index, x), exact (rows of x summed per index)."""
    q = Quantized(x, _sum_bits(x.shape[0]))
    return torch.zeros(n_rows, x.shape[1], dtype=F64).index_add_(0, index, q.q).mul_(pow2(q.s)).to(F32)


_LN2_HI = 0.693359375                    # ln 2 split for float32: k * _LN2_HI is exact for |k| < 2**15
_LN2_LO = -2.12194440e-4
_INV_LN2 = 1.4426950408889634
_EXP_C = [1.0 / math.factorial(n) for n in range(9)]


def exp(x):
    """e**x for float32 x (clamped to [-87, 88]); relative error < 1e-6."""
    x = x.clamp(-87.0, 88.0)
    k = (x * _INV_LN2).round_()
    r = x.sub_(k * _LN2_HI).sub_(k * _LN2_LO)    # |r| <= 0.35
    p = torch.full_like(r, _EXP_C[8])
    for c in reversed(_EXP_C[:8]):
        p.mul_(r).add_(c)
    return p.mul_(((k.to(torch.int32) + 127) << 23).view(F32))


def log(x):
    """ln x for positive normal float32 x; absolute error < 1e-6."""
    m, e = torch.frexp(x)                   # x = m * 2**e, m in [0.5, 1)
    small = m < 0.70710678118654752440
    m = torch.where(small, m * 2.0, m)
    e = torch.where(small, e - 1, e).to(F32)
    s = (m - 1.0) / (m + 1.0)                # |s| <= 0.172
    s2 = s * s
    p = torch.full_like(s, 1.0 / 11)
    for n in range(9, 0, -2):
        p = p * s2 + 1.0 / n
    return (e * _LN2_HI + e * _LN2_LO) + 2.0 * s * p


def sigmoid(x):
    return 1.0 / (1.0 + exp(-x))


def sqrt(x):
    """Square root of non-negative float32 x: Newton's iteration in float64,
    rounded once to float32. Not torch.sqrt: for float32 that is MKL's vsSqrt,
    whose last bit depends on the instruction set MKL picks."""
    d = x.to(F64)
    m, e = torch.frexp(d)                    # d = m * 2**e, m in [0.5, 1)
    odd = (e % 2) == 1
    m = torch.where(odd, m * 2.0, m)         # m in [0.5, 2), e even
    e = torch.where(odd, e - 1, e)
    y = (m + 1.0) * 0.5                      # within 6%; Newton doubles the correct digits
    for _ in range(5):
        y = (y + m / y) * 0.5
    y = y * (((e.to(torch.int64) >> 1) + 1023) << 52).view(F64)
    return torch.where(d == 0, 0.0, y).to(F32)


# ---- RoPE tables (decimal arithmetic, then rounded to float32) -------------------

def _decimal_pi():
    """pi to the context's precision (Machin: 16 atan(1/5) - 4 atan(1/239))."""
    tiny = Decimal(10) ** -(getcontext().prec + 2)

    def atan_inv(n):
        total, power, k, sign = Decimal(0), Decimal(1) / n, 1, 1
        while power > tiny:
            total += sign * power / k
            power, k, sign = power / (n * n), k + 2, -sign
        return total
    return 16 * atan_inv(5) - 4 * atan_inv(239)


def rope_tables(T, D, theta):
    """(cos, sin), each (T, D), as Hugging Face Llama's default RoPE:
    angle[t, i] = t * theta**(-2*(i mod D/2)/D)."""
    with localcontext() as ctx:
        ctx.prec = 60
        pi2 = 2 * _decimal_pi()
        inv_freq = [(-(Decimal(2 * i) / D) * Decimal(theta).ln()).exp() for i in range(D // 2)]
        cos, sin = [], []
        for t in range(T):
            cr, sr = [], []
            for f in inv_freq:
                a = (t * f) % pi2
                c, s, term, n = Decimal(0), Decimal(0), Decimal(1), 0   # Taylor series of e**(ia)
                while True:
                    if n % 4 == 0: c += term
                    elif n % 4 == 1: s += term
                    elif n % 4 == 2: c -= term
                    else: s -= term
                    n += 1
                    term = term * a / n
                    if abs(term) < Decimal(10) ** -50:
                        break
                cr.append(float(c))
                sr.append(float(s))
            cos.append(cr + cr)
            sin.append(sr + sr)
    return torch.tensor(cos, dtype=F32), torch.tensor(sin, dtype=F32)


# ---- The model -------------------------------------------------------------------

class Config:
    def __init__(self, vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
                 num_key_value_heads, rope_theta=10000.0, rms_norm_eps=1e-6):
        self.V, self.C, self.F, self.L = vocab_size, hidden_size, intermediate_size, num_hidden_layers
        self.H, self.KV = num_attention_heads, num_key_value_heads
        self.D = hidden_size // num_attention_heads
        self.theta, self.eps = rope_theta, rms_norm_eps


def param_shapes(cfg):
    """Hugging Face LlamaForCausalLM parameter names and shapes (lm_head tied)."""
    shapes = {"model.embed_tokens.weight": (cfg.V, cfg.C)}
    for i in range(cfg.L):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": (cfg.C,),
            p + "self_attn.q_proj.weight": (cfg.H * cfg.D, cfg.C),
            p + "self_attn.k_proj.weight": (cfg.KV * cfg.D, cfg.C),
            p + "self_attn.v_proj.weight": (cfg.KV * cfg.D, cfg.C),
            p + "self_attn.o_proj.weight": (cfg.C, cfg.H * cfg.D),
            p + "post_attention_layernorm.weight": (cfg.C,),
            p + "mlp.gate_proj.weight": (cfg.F, cfg.C),
            p + "mlp.up_proj.weight": (cfg.F, cfg.C),
            p + "mlp.down_proj.weight": (cfg.C, cfg.F),
        })
    shapes["model.norm.weight"] = (cfg.C,)
    return shapes


def init_params(cfg, seed):
    """Norm weights 1; every matrix uniform in [-2**-5, 2**-5) (std 0.018) on a
    2**-20 grid, from Python's Mersenne Twister (exactly representable)."""
    rng = random.Random(seed)
    params = {}
    for name, shape in param_shapes(cfg).items():
        n = math.prod(shape)
        if len(shape) == 1:
            params[name] = torch.ones(shape, dtype=F32)
        else:
            ints = torch.frombuffer(bytearray(rng.getrandbits(16 * n).to_bytes(2 * n, "little")), dtype=torch.int16)
            params[name] = (ints.to(F32) * pow2(-20)).view(shape)
    return params


def _rmsnorm(x, w, eps):                           # x (N, C)
    ms = xsum(x * x, -1, keepdim=True) / x.shape[-1]
    rstd = 1.0 / sqrt(ms + eps)
    xhat = x * rstd
    return xhat * w, (xhat, rstd)


def _rmsnorm_back(dy, w, cache):
    xhat, rstd = cache
    dw = xsum(dy * xhat, 0)
    dxhat = dy * w
    dot = xsum(dxhat * xhat, -1, keepdim=True) / xhat.shape[-1]
    return (dxhat - xhat * dot) * rstd, dw


def _rot(x):                                       # Hugging Face rotate_half
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def _rot_t(x):                                     # its transpose
    h = x.shape[-1] // 2
    return torch.cat((x[..., h:], -x[..., :h]), dim=-1)


def loss_and_grads(cfg, params, ids, rope, want_grads=True):
    """Mean next-token cross-entropy of ids (B, T) (as LlamaForCausalLM with
    labels=ids) and, with want_grads, the gradient of every parameter (a dict
    like params). Each matmul operand is quantized once and kept for the
    backward pass."""
    B, T = ids.shape
    N, C, H, KV, D = B * T, cfg.C, cfg.H, cfg.KV, cfg.D
    rep = H // KV
    cos, sin = rope[0][:T], rope[1][:T]           # (T, D)
    scale = 1.0 / math.sqrt(D)
    masked = ~torch.ones(T, T, dtype=torch.bool).tril()
    W = {k: q20(v) for k, v in params.items() if v.dim() == 2}
    flat_ids = ids.reshape(-1)

    h = params["model.embed_tokens.weight"][flat_ids]             # (N, C)
    caches = []
    for i in range(cfg.L):
        p = f"model.layers.{i}."
        x, n1 = _rmsnorm(h, params[p + "input_layernorm.weight"], cfg.eps)
        xq = q20(x)
        q = mm(xq, W[p + "self_attn.q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)   # (B, H, T, D)
        k = mm(xq, W[p + "self_attn.k_proj.weight"].T).view(B, T, KV, D).transpose(1, 2)  # (B, KV, T, D)
        v = mm(xq, W[p + "self_attn.v_proj.weight"].T).view(B, T, KV, D).transpose(1, 2)
        qr = q20(q * cos + _rot(q) * sin)
        kr = q20(k * cos + _rot(k) * sin)
        vq = q20(v)
        kh = Quantized(kr.q.repeat_interleave(rep, dim=1), s=kr.s)   # (B, H, T, D): head j reads kv j // rep
        vh = Quantized(vq.q.repeat_interleave(rep, dim=1), s=vq.s)
        z = mm(qr, kh.T).mul_(scale)                                  # (B, H, T, T)
        z = z.sub_(z.masked_fill(masked, -3e38).max(-1, keepdim=True).values).masked_fill_(masked, -87.0)
        e = exp(z).masked_fill_(masked, 0.0)
        P = q20(e.div_(xsum(e, -1, keepdim=True)))
        o = q20(mm(P, vh).transpose(1, 2).reshape(N, C))             # (N, C)
        h = h + mm(o, W[p + "self_attn.o_proj.weight"].T)
        y, n2 = _rmsnorm(h, params[p + "post_attention_layernorm.weight"], cfg.eps)
        yq = q20(y)
        g, u = mm(yq, W[p + "mlp.gate_proj.weight"].T), mm(yq, W[p + "mlp.up_proj.weight"].T)   # (N, F)
        sg = sigmoid(g)
        silu = g * sg
        a = q20(silu * u)
        h = h + mm(a, W[p + "mlp.down_proj.weight"].T)
        caches.append((n1, xq, qr, kh, vh, P, o, n2, yq, g, u, sg, silu, a))
    f, nf = _rmsnorm(h, params["model.norm.weight"], cfg.eps)
    fq, E = q20(f), W["model.embed_tokens.weight"]
    logits = mm(fq, E.T).view(B, T, cfg.V)[:, :-1].reshape(-1, cfg.V)     # (B*(T-1), V)
    targets = ids[:, 1:].reshape(-1)
    m = logits.max(-1, keepdim=True).values
    e = exp(logits - m)
    den = xsum(e, -1, keepdim=True)
    n_tok = targets.numel()
    tok_loss = (log(den) + m - logits.gather(1, targets[:, None]))[:, 0]
    loss = float(xsum(tok_loss, 0)) / n_tok
    if not want_grads:
        return loss, None

    grads = {}
    probs = e.div_(den).scatter_add_(1, targets[:, None], torch.full((n_tok, 1), -1.0, dtype=F32))
    dlogits = torch.zeros(B, T, cfg.V, dtype=F32)
    dlogits[:, :-1] = probs.view(B, T - 1, cfg.V)
    dlogits = q20(dlogits.view(N, cfg.V))        # the 1/n_tok of the mean goes into the scale below
    df = mm(dlogits, E).div_(n_tok)
    dE_head = mm(dlogits.T, fq).div_(n_tok)
    dh, grads["model.norm.weight"] = _rmsnorm_back(df, params["model.norm.weight"], nf)
    for i in reversed(range(cfg.L)):
        p = f"model.layers.{i}."
        n1, xq, qr, kh, vh, P, o, n2, yq, g, u, sg, silu, a = caches[i]
        # MLP
        dhq = q20(dh)
        grads[p + "mlp.down_proj.weight"] = mm(dhq.T, a)
        da = mm(dhq, W[p + "mlp.down_proj.weight"])
        du = q20(da * silu)
        dg = q20((da * u).mul_(sg * (1.0 + g * (1.0 - sg))))
        grads[p + "mlp.gate_proj.weight"] = mm(dg.T, yq)
        grads[p + "mlp.up_proj.weight"] = mm(du.T, yq)
        dy = mm(dg, W[p + "mlp.gate_proj.weight"]).add_(mm(du, W[p + "mlp.up_proj.weight"]))
        dy, grads[p + "post_attention_layernorm.weight"] = _rmsnorm_back(
            dy, params[p + "post_attention_layernorm.weight"], n2)
        dh = dh + dy
        # Attention
        dhq = q20(dh)
        grads[p + "self_attn.o_proj.weight"] = mm(dhq.T, o)
        do = q20(mm(dhq, W[p + "self_attn.o_proj.weight"]).view(B, T, H, D).transpose(1, 2))   # (B, H, T, D)
        dP = mm(do, vh.T)                                             # (B, H, T, T)
        dvh = mm(P.T, do)
        Pv = P.value()
        ds = q20((dP.sub_(xsum(dP * Pv, -1, keepdim=True))).mul_(Pv).mul_(scale))
        dqr = mm(ds, kh)
        dkh = mm(ds.T, qr)
        dkr = xsum(dkh.view(B, KV, rep, T, D), 2)
        dv = xsum(dvh.view(B, KV, rep, T, D), 2)
        dq = dqr * cos + _rot_t(dqr * sin)
        dk = dkr * cos + _rot_t(dkr * sin)
        dq, dk, dv = (q20(t.transpose(1, 2).reshape(N, -1)) for t in (dq, dk, dv))
        grads[p + "self_attn.q_proj.weight"] = mm(dq.T, xq)
        grads[p + "self_attn.k_proj.weight"] = mm(dk.T, xq)
        grads[p + "self_attn.v_proj.weight"] = mm(dv.T, xq)
        dx = mm(dq, W[p + "self_attn.q_proj.weight"]).add_(mm(dk, W[p + "self_attn.k_proj.weight"]))
        dx.add_(mm(dv, W[p + "self_attn.v_proj.weight"]))
        dx, grads[p + "input_layernorm.weight"] = _rmsnorm_back(dx, params[p + "input_layernorm.weight"], n1)
        dh = dh + dx
    grads["model.embed_tokens.weight"] = index_add(cfg.V, flat_ids, dh).add_(dE_head)
    return loss, grads


class AdamW:
    """torch.optim.AdamW's update (weight_decay 0 unless given), op by op."""

    def __init__(self, params, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.b1, self.b2, self.eps, self.wd = betas[0], betas[1], eps, weight_decay
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}
        self.b1t, self.b2t = 1.0, 1.0           # beta**t, by repeated products (no libm pow)

    def step(self, params, grads, lr):
        self.b1t *= self.b1
        self.b2t *= self.b2
        bc1, bc2 = 1.0 - self.b1t, 1.0 - self.b2t
        for k, p in params.items():
            g = grads[k]
            if self.wd:
                p = p * (1.0 - lr * self.wd)
            self.m[k] = self.m[k] * self.b1 + g * (1.0 - self.b1)
            self.v[k] = self.v[k] * self.b2 + (g * g) * (1.0 - self.b2)
            denom = sqrt(self.v[k]) / math.sqrt(bc2) + self.eps
            params[k] = p - (self.m[k] / denom) * (lr / bc1)
