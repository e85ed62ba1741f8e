# The DeepSeek-V3 network (MLA + dense/MoE blocks + final norm + LM head + the MTP module) in
# PyTorch, written from the architecture as published, for training small models and for checking
# dserve's forward pass against an implementation that shares no code with it.
#
# Weights live in one dict keyed by the checkpoint's tensor names (model.layers.0.self_attn....).
# Conventions dserve also follows: RoPE rotates interleaved pairs (x[2i], x[2i+1]); YaRN as in
# DeepSeek's config; MoE scores are sigmoids plus e_score_correction_bias, top-2-sum group scores,
# excluded groups masked with -inf, weights normalised and scaled by routed_scaling_factor; the MTP
# module reads the main model's hidden state after model.norm.
import math

import torch


class Config:
    def __init__(self, j):
        self.j = j
        self.hidden = j["hidden_size"]
        self.layers = j["num_hidden_layers"]
        self.heads = j["num_attention_heads"]
        self.vocab = j["vocab_size"]
        self.q_lora = j["q_lora_rank"]
        self.kv_lora = j["kv_lora_rank"]
        self.nope = j["qk_nope_head_dim"]
        self.rope = j["qk_rope_head_dim"]
        self.v_dim = j["v_head_dim"]
        self.inter = j["intermediate_size"]
        self.moe_inter = j["moe_intermediate_size"]
        self.experts = j["n_routed_experts"]
        self.shared = j["n_shared_experts"]
        self.top_k = j["num_experts_per_tok"]
        self.n_group = j["n_group"]
        self.topk_group = j["topk_group"]
        self.first_dense = j["first_k_dense_replace"]
        self.scaling = j["routed_scaling_factor"]
        self.norm_topk = j["norm_topk_prob"]
        self.eps = j["rms_norm_eps"]
        self.mtp = j.get("num_nextn_predict_layers", 0) > 0
        self._rope_tables()

    def is_moe(self, layer):
        return layer >= self.first_dense

    def _rope_tables(self):
        d, base = self.rope, float(self.j["rope_theta"])
        inv = [base ** (-2.0 * i / d) for i in range(d // 2)]
        self.softmax_scale = 1.0 / math.sqrt(self.nope + self.rope)
        self.mscale_rope = 1.0
        rs = self.j.get("rope_scaling")
        if rs and rs.get("type", rs.get("rope_type")) == "yarn":
            factor = rs["factor"]
            orig = rs.get("original_max_position_embeddings", 4096)

            def corr_dim(rot):
                return d * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

            low = max(math.floor(corr_dim(rs.get("beta_fast", 32))), 0)
            high = min(math.ceil(corr_dim(rs.get("beta_slow", 1))), d - 1)
            if low == high:
                high += 0.001
            for i in range(d // 2):
                ramp = min(max((i - low) / (high - low), 0.0), 1.0)
                inv[i] = inv[i] / factor * ramp + inv[i] * (1 - ramp)

            def mscale(m):
                return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0

            all_dim = rs.get("mscale_all_dim", 0.0)
            self.mscale_rope = mscale(rs.get("mscale", 1.0)) / mscale(all_dim)
            if all_dim:
                self.softmax_scale *= mscale(all_dim) ** 2
        self.inv_freq = inv

    def rope_cos_sin(self, positions, dtype):
        inv = torch.tensor(self.inv_freq, dtype=torch.float64)
        angle = positions.to(torch.float64)[:, None] * inv[None, :]
        cos = (torch.cos(angle) * self.mscale_rope).to(dtype)
        sin = (torch.sin(angle) * self.mscale_rope).to(dtype)
        return cos, sin


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def apply_rope(x, cos, sin):
    # x [..., S, d] with interleaved pairs; cos/sin [S, d/2].
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)
    return out.flatten(-2)


def linear(x, w):
    return x @ w.t()


def attention(cfg, p, prefix, x, cos, sin):
    B, S, _ = x.shape
    H, dn, dr, dv = cfg.heads, cfg.nope, cfg.rope, cfg.v_dim
    a = prefix + "self_attn."
    q = linear(rms_norm(linear(x, p[a + "q_a_proj.weight"]), p[a + "q_a_layernorm.weight"], cfg.eps),
               p[a + "q_b_proj.weight"]).view(B, S, H, dn + dr).transpose(1, 2)
    kv_a = linear(x, p[a + "kv_a_proj_with_mqa.weight"])
    c_kv = rms_norm(kv_a[..., : cfg.kv_lora], p[a + "kv_a_layernorm.weight"], cfg.eps)
    k_pe = apply_rope(kv_a[..., cfg.kv_lora:], cos, sin)[:, None]  # [B, 1, S, dr]
    kv = linear(c_kv, p[a + "kv_b_proj.weight"]).view(B, S, H, dn + dv).transpose(1, 2)
    q_pe = apply_rope(q[..., dn:], cos, sin)
    scores = (q[..., :dn] @ kv[..., :dn].transpose(-1, -2) + q_pe @ k_pe.transpose(-1, -2))
    scores = scores * cfg.softmax_scale
    mask = torch.ones(S, S, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ kv[..., dn:]  # [B, H, S, dv]
    return linear(out.transpose(1, 2).reshape(B, S, H * dv), p[a + "o_proj.weight"])


def mlp(p, prefix, x):
    g = linear(x, p[prefix + "gate_proj.weight"])
    u = linear(x, p[prefix + "up_proj.weight"])
    return linear(torch.nn.functional.silu(g) * u, p[prefix + "down_proj.weight"])


def route(cfg, p, prefix, x):
    """Returns (expert ids [T, K], weights [T, K]) for x [T, hidden]."""
    scores = torch.sigmoid(linear(x, p[prefix + "mlp.gate.weight"]))
    choice = scores.detach() + p[prefix + "mlp.gate.e_score_correction_bias"].detach()
    T, E = choice.shape
    groups = choice.view(T, cfg.n_group, E // cfg.n_group)
    group_score = groups.topk(min(2, E // cfg.n_group), dim=-1).values.sum(-1)
    kept = group_score.topk(cfg.topk_group, dim=-1).indices
    keep = torch.zeros_like(group_score, dtype=torch.bool).scatter(1, kept, True)
    choice = choice.masked_fill(~keep.repeat_interleave(E // cfg.n_group, dim=1), float("-inf"))
    idx = choice.topk(cfg.top_k, dim=-1).indices
    w = scores.gather(1, idx)
    if cfg.top_k > 1 and cfg.norm_topk:
        w = w / (w.sum(-1, keepdim=True) + 1e-20)
    return idx, w * cfg.scaling


def moe(cfg, p, prefix, x, loads=None):
    """Routed experts (+ shared). Every expert runs on every token as one wide matrix product and
    the unchosen ones get weight 0: the same result as running each expert on its own tokens,
    and on a CPU much faster than 16 small products."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    idx, w = route(cfg, p, prefix, x)
    T, E = x.shape[0], cfg.experts
    dense_w = torch.zeros(T, E, dtype=x.dtype).scatter(1, idx, w)  # [T, E]
    if loads is not None:
        counts = torch.bincount(idx.reshape(-1), minlength=E).tolist()
        for e in range(E):
            loads[e] += counts[e]
    ex = f"{prefix}mlp.experts."
    gate = torch.cat([p[f"{ex}{e}.gate_proj.weight"] for e in range(E)])  # [E * I, hidden]
    up = torch.cat([p[f"{ex}{e}.up_proj.weight"] for e in range(E)])
    down = torch.cat([p[f"{ex}{e}.down_proj.weight"] for e in range(E)], dim=1)  # [hidden, E * I]
    a = torch.nn.functional.silu(linear(x, gate)) * linear(x, up)  # [T, E * I]
    a = (a.view(T, E, -1) * dense_w[:, :, None]).view(T, -1)
    out = linear(a, down)
    if cfg.shared:
        out = out + mlp(p, prefix + "mlp.shared_experts.", x)
    return out.view(shape)


def block(cfg, p, layer, x, cos, sin, loads=None):
    prefix = f"model.layers.{layer}."
    x = x + attention(cfg, p, prefix, rms_norm(x, p[prefix + "input_layernorm.weight"], cfg.eps),
                      cos, sin)
    h = rms_norm(x, p[prefix + "post_attention_layernorm.weight"], cfg.eps)
    if cfg.is_moe(layer):
        f = moe(cfg, p, prefix, h, None if loads is None else loads.setdefault(layer, [0] * cfg.experts))
    else:
        f = mlp(p, prefix + "mlp.", h)
    return x + f


def forward(cfg, p, embed, head, tokens, next_tokens=None, loads=None):
    """tokens [B, S] at positions 0..S-1 -> (main logits [B, S, V'], MTP logits [B, S, V'] or None).

    embed(ids) gives embedding rows and head(h) logits: the caller decides how the vocabulary is
    stored. With next_tokens [B, S] (the token after each input token), the MTP module predicts
    the token after that one: row i pairs the main hidden state at i with next_tokens[i].
    """
    S = tokens.shape[1]
    cos, sin = cfg.rope_cos_sin(torch.arange(S), p["model.norm.weight"].dtype)
    x = embed(tokens)
    for layer in range(cfg.layers):
        x = block(cfg, p, layer, x, cos, sin, loads)
    h = rms_norm(x, p["model.norm.weight"], cfg.eps)
    logits = head(h)
    if next_tokens is None or not cfg.mtp:
        return logits, None
    L = cfg.layers
    m = f"model.layers.{L}."
    e = rms_norm(embed(next_tokens), p[m + "enorm.weight"], cfg.eps)
    hh = rms_norm(h, p[m + "hnorm.weight"], cfg.eps)
    y = linear(torch.cat([e, hh], dim=-1), p[m + "eh_proj.weight"])
    y = block(cfg, p, L, y, cos, sin, loads)
    return logits, head(rms_norm(y, p[m + "shared_head.norm.weight"], cfg.eps))


def tensor_shapes(cfg):
    """Every tensor of the checkpoint except the embeddings and heads: name -> shape."""
    H, dq = cfg.heads, cfg.nope + cfg.rope
    shapes = {"model.norm.weight": [cfg.hidden]}

    def mlp_shapes(prefix, inter):
        shapes[prefix + "gate_proj.weight"] = [inter, cfg.hidden]
        shapes[prefix + "up_proj.weight"] = [inter, cfg.hidden]
        shapes[prefix + "down_proj.weight"] = [cfg.hidden, inter]

    layers = list(range(cfg.layers)) + ([cfg.layers] if cfg.mtp else [])
    for layer in layers:
        p = f"model.layers.{layer}."
        a = p + "self_attn."
        shapes[p + "input_layernorm.weight"] = [cfg.hidden]
        shapes[p + "post_attention_layernorm.weight"] = [cfg.hidden]
        shapes[a + "q_a_proj.weight"] = [cfg.q_lora, cfg.hidden]
        shapes[a + "q_a_layernorm.weight"] = [cfg.q_lora]
        shapes[a + "q_b_proj.weight"] = [H * dq, cfg.q_lora]
        shapes[a + "kv_a_proj_with_mqa.weight"] = [cfg.kv_lora + cfg.rope, cfg.hidden]
        shapes[a + "kv_a_layernorm.weight"] = [cfg.kv_lora]
        shapes[a + "kv_b_proj.weight"] = [H * (cfg.nope + cfg.v_dim), cfg.kv_lora]
        shapes[a + "o_proj.weight"] = [cfg.hidden, H * cfg.v_dim]
        if cfg.is_moe(layer):
            shapes[p + "mlp.gate.weight"] = [cfg.experts, cfg.hidden]
            shapes[p + "mlp.gate.e_score_correction_bias"] = [cfg.experts]
            for e in range(cfg.experts):
                mlp_shapes(f"{p}mlp.experts.{e}.", cfg.moe_inter)
            if cfg.shared:
                mlp_shapes(p + "mlp.shared_experts.", cfg.moe_inter * cfg.shared)
        else:
            mlp_shapes(p + "mlp.", cfg.inter)
    if cfg.mtp:
        m = f"model.layers.{cfg.layers}."
        shapes[m + "enorm.weight"] = [cfg.hidden]
        shapes[m + "hnorm.weight"] = [cfg.hidden]
        shapes[m + "eh_proj.weight"] = [cfg.hidden, 2 * cfg.hidden]
        shapes[m + "shared_head.norm.weight"] = [cfg.hidden]
    return shapes


def is_norm(name):
    return name.endswith("norm.weight")
