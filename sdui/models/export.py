"""Write a diffusers SD 1.x/2.x/SDXL pipeline as one original-layout (LDM/"CompVis") checkpoint.

The inverse of diffusers' single-file loader, for UNet2DConditionModel + AutoencoderKL + CLIP and
OpenCLIP text encoders. Used to make single-file checkpoints for tests and benchmarks (there is no user-facing
convert command yet).
Written for any depth of block_out_channels / layers_per_block (tiny test models included).
"""

from __future__ import annotations

import os


def _unet_map(config) -> list[tuple[str, str]]:
    """(diffusers prefix, ldm prefix) pairs for the UNet's blocks."""
    n = len(config["block_out_channels"])
    lpb = config["layers_per_block"]
    pairs = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
             ("class_embedding.", "label_emb.0.") if config.get("num_class_embeds") is None
             else ("class_embedding.", "label_emb."),
             ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2.")]  # SDXL
    for i in range(n):
        for j in range(lpb):
            idx = 1 + i * (lpb + 1) + j
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{idx}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{idx}.1."))
        if i < n - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * (lpb + 1)}.0.op."))
        up_has_attn = "CrossAttn" in config["up_block_types"][i]
        for j in range(lpb + 1):
            idx = i * (lpb + 1) + j
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{idx}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{idx}.1."))
        if i < n - 1:
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * (lpb + 1) + lpb}.{2 if up_has_attn else 1}."))
    pairs.append(("mid_block.attentions.0.", "middle_block.1."))
    for j in range(2):
        pairs.append((f"mid_block.resnets.{j}.", f"middle_block.{2 * j}."))
    return pairs


_RESNET = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
           ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."), ("conv_shortcut.", "skip_connection.")]


def unet_to_ldm(unet) -> dict:
    config = unet.config
    pairs = sorted(_unet_map(config), key=lambda p: -len(p[0]))
    out = {}
    for key, value in unet.state_dict().items():
        new = None
        for src, dst in pairs:
            if key.startswith(src):
                rest = key[len(src):]
                if ".resnets." in src:
                    for a, b in _RESNET:
                        if rest.startswith(a):
                            rest = b + rest[len(a):]
                            break
                new = dst + rest
                break
        if new is None:
            raise ValueError(f"no original-layout name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(vae) -> dict:
    config = vae.config
    n = len(config["block_out_channels"])
    lpb = config["layers_per_block"]
    pairs = [("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
             ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
             ("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for i in range(n):
        for j in range(lpb):
            pairs.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."))
        if i < n - 1:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample."))
        for j in range(lpb + 1):
            pairs.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{n - 1 - i}.block.{j}."))
    for side in ("encoder", "decoder"):
        for j in range(2):
            pairs.append((f"{side}.mid_block.resnets.{j}.", f"{side}.mid.block_{j + 1}."))
    pairs.sort(key=lambda p: -len(p[0]))
    attn = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        for src, dst in pairs:
            if key.startswith(src):
                rest = key[len(src):]
                if "attn_1" in dst:
                    for a, b in attn:
                        if rest.startswith(a):
                            rest = b + rest[len(a):]
                            if a != "group_norm." and rest.endswith("weight") and value.ndim == 2:
                                value = value[:, :, None, None]  # linear -> 1x1 conv
                            break
                new = dst + rest.replace("conv_shortcut.", "nin_shortcut.")
                break
        out["first_stage_model." + new] = value
    return out


def text_encoder_to_ldm(text_encoder) -> dict:
    """CLIP (SD 1.x) layout: ``cond_stage_model.transformer.text_model.`` + the transformers names
    (transformers >= 5.6 flattened CLIPTextModel, dropping the ``text_model.`` level; we put it back)."""
    out = {}
    for k, v in text_encoder.state_dict().items():
        if k.endswith("position_ids"):
            continue
        k = k if k.startswith("text_model.") else "text_model." + k
        out["cond_stage_model.transformer." + k] = v
    return out


_OPENCLIP_LAYER = [("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."),
                   ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]


def openclip_to_ldm(text_encoder, prefix: str) -> dict:
    """OpenCLIP (SD 2.x ``cond_stage_model.model.``, SDXL's ``conditioner.embedders.1.model.``) layout:
    q/k/v joined into ``in_proj_weight``/``in_proj_bias``, the projection stored transposed (the
    inverse of diffusers' ``convert_open_clip_checkpoint``)."""
    import torch

    sd = {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v
          for k, v in text_encoder.state_dict().items() if not k.endswith("position_ids")}
    out = {prefix + "token_embedding.weight": sd.pop("text_model.embeddings.token_embedding.weight"),
           prefix + "positional_embedding": sd.pop("text_model.embeddings.position_embedding.weight"),
           prefix + "ln_final.weight": sd.pop("text_model.final_layer_norm.weight"),
           prefix + "ln_final.bias": sd.pop("text_model.final_layer_norm.bias")}
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd.pop("text_projection.weight").T.contiguous()
    layers = {int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")}
    for i in sorted(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([sd.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"])
        for key in [k for k in sd if k.startswith(src)]:
            rest = key[len(src):]
            for a, b in _OPENCLIP_LAYER:
                if rest.startswith(a):
                    rest = b + rest[len(a):]
                    break
            out[dst + rest] = sd.pop(key)
    if sd:
        raise ValueError(f"no OpenCLIP name for text-encoder keys {sorted(sd)[:3]}")
    return out


def pipeline_to_ldm(pipe, dtype=None) -> dict:
    """SD 1.x (CLIP), SD 2.x and the x4 upscaler (OpenCLIP-H, 1024 wide), SDXL (CLIP-L + OpenCLIP-G)."""
    sd = {}
    sd.update(unet_to_ldm(pipe.unet))
    sd.update(vae_to_ldm(pipe.vae))
    if getattr(pipe, "text_encoder_2", None) is not None:
        sd.update({k.replace("cond_stage_model.", "conditioner.embedders.0.", 1): v
                   for k, v in text_encoder_to_ldm(pipe.text_encoder).items()})
        sd.update(openclip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    elif pipe.text_encoder.config.hidden_size == 1024:
        sd.update(openclip_to_ldm(pipe.text_encoder, "cond_stage_model.model."))
    else:
        sd.update(text_encoder_to_ldm(pipe.text_encoder))
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    return {k: v.contiguous() for k, v in sd.items()}


def save_single_file(pipe, path: str | os.PathLike, dtype=None) -> str:
    """Save as original-layout ``.safetensors`` (or a plain state-dict pickle for ``.ckpt``/``.pt``)."""
    import torch

    sd = pipeline_to_ldm(pipe, dtype)
    path = str(path)
    tmp = path + ".tmp"
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(sd, tmp)
    else:
        torch.save({"state_dict": sd}, tmp)
    os.replace(tmp, path)
    return path
