"""OCC-CLIP verifier: "was this image made by generator X?" from a few images of X.

Liu et al. (2024), *Which Model Generated This Image? A Model-Agnostic Approach for Origin
Attribution*, treat the question as few-shot one-class classification on top of a frozen CLIP:

- two prompts, ``[V]_1 .. [V]_M target.`` and ``[V]_1 .. [V]_M non-target.``, whose context vectors
  ``[V]`` (one set per class, CoOp-style) are the only thing learnt; both CLIP towers stay frozen;
- the negatives are a bank of other images (real photos and other generators);
- hard negatives are synthesised in image-feature space: every target feature is moved by one
  gradient step of length ``adv_eps`` that *increases* its target-class loss (an L2 "fast gradient"
  step, the L2 counterpart of FGSM), re-normalised, labelled non-target and added to the
  negatives, so the decision boundary is pulled tight around the target images;
- the score is ``P(target | image)``: the softmax, over the two prompts, of CLIP's logit scale times
  the cosine similarity between the image features and the two text embeddings.

Optional, and what it needs
---------------------------
This module is **optional**: ``attribution.verification`` imports it only when it is asked for, and
it needs ``open_clip_torch``. It is only useful with **pretrained CLIP weights** (text *and* image towers), e.g.
``ViT-B-16:openai`` or a local checkpoint: random weights know nothing about real generators.
The tests run a tiny random CLIP offline, so they check the mechanics (only the prompts learn, the
adversarial negatives act, the threshold holds its false-match rate, save/load is exact) and that
it separates synthetic "generators", **not** how well it attributes real generators. Real gains over
:class:`~attribution.heads.open_set.OpenSetHead` can only be measured where pretrained CLIP weights
are available, which is not the case in the offline development environment.

Differences from the paper worth knowing: features are encoded once and training is full-batch on
them with Adam and a cosine schedule (CoOp uses SGD on image mini-batches); the adversarial
step is taken on the L2-normalised gradient so ``adv_eps`` is a distance on the unit sphere whatever
the embedding size; ``offset_`` is set, like the open-set head's verification thresholds, at the
``1 - false_match_rate`` quantile of scores of negatives held out from training.

Usage
-----
From Python (``my_generator_paths`` etc. are lists of image files)::

    from attribution.verification import OCCCLIPVerifier

    verifier = OCCCLIPVerifier.from_clip("ViT-B-16:openai", target="my_generator", steps=200)
    target = verifier.features(my_generator_paths).features  # (n, embed_dim); .errors: inputs left out
    negatives = verifier.features(real_and_other_generator_paths).features
    verifier.fit(target, negatives)
    verifier.verify(query_paths)                       # VerificationOutput rows, as `attribution verify --json`
    verifier.predict(verifier.features(query_paths).features)  # +1 "made by X", -1 otherwise
    verifier.save_pretrained("occ-clip-my-generator")  # config.json + model.safetensors + README.md
    verifier = OCCCLIPVerifier.from_pretrained("occ-clip-my-generator")

or ``attribution fit-verifier occ-clip --backbone ViT-B-16:openai --target DIR --negatives DIR``.
Features are those of ``CLIPBackbone(backbone_id, layers=["embed"]).encode`` (in fp32), so features
cached by that backbone can be passed to :meth:`OCCCLIPVerifier.fit` directly.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, text_global_pool
from PIL import Image

from ..backbones.base import average_views, default_device
from ..backbones.clip import default_preprocess_cfg, load_open_clip_model, parse_backbone_id
from ..persistence import card_header, validate_config
from ..storage import ZooError
from ..transform import PreprocessCfg, image_transform
from .base import Verifier

CLASS_NAMES = ("target", "non-target")  # row 0 of the prompts is the target class
PLACEHOLDER = "X"
TARGET, NON_TARGET = 0, 1


# --------------------------------------------------------------------------- loading
def load_open_clip(backbone_id: str) -> tuple[torch.nn.Module, Callable[..., torch.Tensor]]:
    """The whole CLIP model (both towers, pretrained weights, CPU, fp32, eval) and its tokenizer.

    Raises ``ValueError`` for a malformed id and ``RuntimeError`` naming the id when the weights
    cannot be loaded (open_clip is asked to require them: no silent random init).
    """
    model = load_open_clip_model(backbone_id)
    try:
        tokenizer = open_clip.get_tokenizer(parse_backbone_id(backbone_id)[0])
    except Exception as exc:
        raise RuntimeError(f"cannot load the tokenizer of CLIP backbone {backbone_id!r}: {exc}") from exc
    return model, tokenizer


def _text_owner(model: torch.nn.Module) -> tuple[torch.nn.Module, str, int | None]:
    """The module holding the text tower's parts, its pool type and its EOS id (see ``CLIP.encode_text``)."""
    if hasattr(model, "token_embedding") and hasattr(model, "text_pool_type"):  # open_clip.CLIP
        return model, model.text_pool_type, getattr(model, "text_eos_id", None)
    text = getattr(model, "text", None)  # open_clip.CustomTextCLIP with a built-in text transformer
    if isinstance(text, TextTransformer) and text.cls_emb is None and not text.use_pad_mask:
        return text, text.pool_type, text.eos_id
    raise NotImplementedError(f"prompt learning needs open_clip's own causal text transformer; "
                              f"{type(model).__name__} with a {type(text).__name__} text tower is not supported")


# --------------------------------------------------------------------------- verifier
CARD_TEMPLATE = card_header("image-forensics", "generator-attribution", "verification", "occ-clip") + """
# {name}

OCC-CLIP verifier (Liu et al. 2024): "was this image made by `{target}`?", from prompt contexts learnt
on the frozen CLIP `{backbone}` with adversarial hard negatives. A match needs a score at least the
threshold set so that {fmr:.1%} of held-out negative images match ({n_negatives} of them kept for the
false-match rate at each score).

```bash
python -m attribution verify --verifier occ-clip:{name} --json image.png
```
"""


class OCCCLIPVerifier(Verifier):
    """One-class verifier "made by the target generator?" with learnt CLIP prompts (OCC-CLIP).

    Parameters
    ----------
    model : open_clip model
        A CLIP with open_clip's text transformer; frozen (``requires_grad`` off) and moved to ``device``.
    tokenizer : callable
        Its open_clip tokenizer (``open_clip.get_tokenizer(name)``).
    target : str
        Name of the target generator (the JSON's ``model``).
    n_ctx : int
        Learnable context vectors per prompt.
    steps : int
        Full-batch Adam steps (cosine-decayed learning rate).
    lr : float
        Peak learning rate.
    adv_eps : float
        Length of the adversarial step on the unit sphere of image features.
    adv_weight : float
        How much each hard negative counts relative to an ordinary negative in the non-target loss
        (the target and non-target classes are weighted equally overall); 0 turns them off.
    false_match_rate : float
        Share of held-out negatives allowed to match: ``offset_`` is their ``1 - false_match_rate`` quantile.
    calibration_fraction : float
        Share of the negatives held out of training to set ``offset_``.
    random_state : int
        Seed for the context initialisation and the calibration split.
    batch_size : int
        Images per CLIP forward in :meth:`verify` and :meth:`features`.
    backbone_id : str, optional
        The CLIP's id (``name:tag``, ``hf-hub:org/repo``, ``local-dir:/path``...), recorded when saved so
        that :meth:`from_pretrained` can load it again; :meth:`from_clip` sets it.
    device : str or torch.device, optional
        CUDA when available, else CPU; computation is fp32 on both.

    Attributes
    ----------
    ctx_ : torch.Tensor of shape (2, n_ctx, text width)
        Learnt context vectors of the ``target`` and ``non-target`` prompts.
    offset_ : float
        Threshold on :meth:`score_samples`.
    negative_scores_ : ndarray of shape (n_calibration,)
        :meth:`score_samples` of the held-out negatives ``offset_`` was set on.
    n_features_in_ : int
        Image-embedding size.
    loss_curve_ : list of float
        Training loss per step (not saved).

    Examples
    --------
    >>> verifier = OCCCLIPVerifier.from_clip("ViT-B-16:openai")  # doctest: +SKIP
    >>> verifier.fit(target_features, negative_features).predict(features)  # doctest: +SKIP
    array([ 1, -1, ...])
    """

    method: ClassVar[str] = "occ-clip"
    _fitted_attrs: ClassVar[tuple[str, ...]] = ("ctx_", "offset_")
    _unsaved: ClassVar[tuple[str, ...]] = ("model", "tokenizer", "backbone_id", "device")

    def __init__(self, model: torch.nn.Module, tokenizer: Callable[..., torch.Tensor], *, target: str = "target",
                 n_ctx: int = 8, steps: int = 100, lr: float = 2e-3, adv_eps: float = 0.05, adv_weight: float = 1.0,
                 false_match_rate: float = 0.01, calibration_fraction: float = 0.25, random_state: int = 0,
                 batch_size: int = 64, backbone_id: str | None = None,
                 device: str | torch.device | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.target = target
        self.n_ctx = n_ctx
        self.steps = steps
        self.lr = lr
        self.adv_eps = adv_eps
        self.adv_weight = adv_weight
        self.false_match_rate = false_match_rate
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state
        self.batch_size = batch_size
        self.backbone_id = backbone_id
        self.device = device

    # ------------------------------------------------------------ construction
    @classmethod
    def from_clip(cls, backbone_id: str, **kwargs: Any) -> "OCCCLIPVerifier":
        """An unfitted verifier on the CLIP ``backbone_id`` (the ids of ``CLIPBackbone``: ``name:tag``,
        ``name:/path/ckpt``, ``hf-hub:org/repo``, ``local-dir:/path``); ``kwargs`` go to the constructor.

        Raises ``ValueError`` for a malformed id, ``RuntimeError`` when the weights cannot be loaded.
        """
        model, tokenizer = load_open_clip(backbone_id)
        return cls(model, tokenizer, backbone_id=backbone_id, **kwargs)

    @property
    def name(self) -> str:
        return self.target

    @property
    def preprocess_cfg(self) -> PreprocessCfg:
        """Preprocessing that open_clip attached to the image tower (as ``CLIPBackbone`` uses it)."""
        return default_preprocess_cfg(self.model.visual)

    def _device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else default_device()

    def _setup(self) -> None:
        """Freeze the model on the device and tokenise the two prompts (once)."""
        device = self._device()
        if getattr(self, "_ready_on", None) == device:
            return
        self.model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
        owner, self._pool_type, self._eos_id = _text_owner(self.model)
        self._owner = owner
        prompts = [" ".join([PLACEHOLDER] * self.n_ctx + [name]) + "." for name in CLASS_NAMES]
        tokens = self.tokenizer(prompts)
        n_pos = owner.positional_embedding.shape[0]
        if tokens.shape[1] != n_pos:
            raise ValueError(f"the tokenizer gives {tokens.shape[1]} tokens, the text tower expects {n_pos}")
        try:
            longer = self.tokenizer(prompts, context_length=4 * n_pos)
        except TypeError:
            longer = None
        if longer is not None and not (torch.equal(longer[:, :n_pos], tokens)
                                       and (longer[:, n_pos:] == longer[:, -1:]).all()):
            raise ValueError(f"n_ctx={self.n_ctx} leaves no room for the class names in {n_pos} tokens")
        ctx_ids = tokens[:, 1:1 + self.n_ctx]
        if self.n_ctx < 1 or ctx_ids.shape[1] != self.n_ctx or not (ctx_ids == ctx_ids[0, 0]).all():
            raise ValueError("the tokenizer must give one start token then one token per context placeholder")
        self._tokens = tokens.to(device)
        self._ready_on = device
        self._text_cache = None

    # ------------------------------------------------------------ text tower
    def _encode_prompts(self, ctx: torch.Tensor) -> torch.Tensor:
        """``CLIP.encode_text`` of the two prompts with their placeholders replaced by ``ctx``: (2, embed_dim).

        Mirrors open_clip 3.3's ``encode_text``; its ``Transformer.forward`` handles ``batch_first``.
        """
        o, tokens = self._owner, self._tokens
        cast_dtype = o.transformer.get_cast_dtype()
        x = o.token_embedding(tokens).to(cast_dtype)  # [2, n_pos, width]
        x = torch.cat([x[:, :1], ctx.to(cast_dtype), x[:, 1 + self.n_ctx:]], dim=1)
        x = x + o.positional_embedding.to(cast_dtype)
        x = o.transformer(x, attn_mask=o.attn_mask)
        x = o.ln_final(x)
        x = text_global_pool(x, tokens, self._pool_type, eos_token_id=self._eos_id)
        if o.text_projection is not None:
            x = o.text_projection(x) if isinstance(o.text_projection, torch.nn.Linear) else x @ o.text_projection
        return x

    def _placeholder_ctx(self) -> torch.Tensor:
        """The token embeddings the placeholders stand for (prompts then equal plain ``encode_text``)."""
        self._setup()
        with torch.no_grad():
            return self._owner.token_embedding(self._tokens[:, 1:1 + self.n_ctx]).float().clone()

    def _init_ctx(self) -> torch.Tensor:
        """CoOp's initialisation: N(0, 0.02^2), seeded by ``random_state``."""
        width = self._owner.token_embedding.weight.shape[1]
        g = torch.Generator().manual_seed(self.random_state)
        return (0.02 * torch.randn(len(CLASS_NAMES), self.n_ctx, width, generator=g)).to(self._device())

    def _logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.detach().float().exp().clamp(max=100.0).reshape(())

    def _logits(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self._logit_scale() * F.normalize(feats, dim=-1) @ text.T

    def _hard_negatives(self, feats: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Target features after one L2 gradient step of ``adv_eps`` that raises their target-class loss."""
        x = F.normalize(feats.detach(), dim=-1).requires_grad_(True)
        target = torch.full((len(x),), TARGET, device=x.device)
        loss = F.cross_entropy(self._logits(x, text.detach()), target)
        (grad,) = torch.autograd.grad(loss, x)
        step = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return F.normalize(x.detach() + self.adv_eps * step, dim=-1)

    # ------------------------------------------------------------ fitting
    def _as_features(self, X: Any, what: str) -> torch.Tensor:
        X = torch.as_tensor(np.asarray(X, dtype=np.float32)) if not isinstance(X, torch.Tensor) else X.float()
        dim = getattr(self, "n_features_in_", None)
        if X.ndim != 2 or len(X) == 0 or (dim is not None and X.shape[1] != dim):
            want = f"(n_samples, {dim})" if dim is not None else "(n_samples, n_features)"
            raise ValueError(f"{what} must be a non-empty {want} array; got shape {tuple(X.shape)}")
        return X.to(self._device())

    def fit(self, target_features: Any, negative_features: Any) -> "OCCCLIPVerifier":
        """Learn the prompt contexts and calibrate ``offset_``.

        ``target_features`` ``(n_target, embed_dim)``: CLIP image embeddings of a few images of the
        target generator; ``negative_features`` ``(n_negative, embed_dim)``: embeddings of other
        images (real and other generators). A ``calibration_fraction`` share of the negatives is held
        out of training to set ``offset_``; their scores are kept (``negative_scores_``) for the
        false-match rate at each score. Returns ``self``; raises ``ValueError`` for features of the wrong
        size or too few negatives to split.
        """
        self._setup()
        for name in ("n_features_in_", "ctx_", "offset_", "negative_scores_"):
            self.__dict__.pop(name, None)
        T = self._as_features(target_features, "target_features")
        N = self._as_features(negative_features, "negative_features")
        with torch.no_grad():
            embed_dim = self._encode_prompts(self._init_ctx()).shape[-1]
        if T.shape[1] != embed_dim or N.shape[1] != embed_dim:
            raise ValueError(f"features must have the CLIP embedding size {embed_dim}; "
                             f"got {T.shape[1]} and {N.shape[1]}")
        n_cal = int(round(self.calibration_fraction * len(N)))
        if n_cal < 1 or n_cal >= len(N):
            raise ValueError(f"{len(N)} negatives cannot be split into training and calibration "
                             f"(calibration_fraction={self.calibration_fraction})")
        order = torch.from_numpy(np.random.default_rng(self.random_state).permutation(len(N))).to(N.device)
        N_cal, N_train = N[order[:n_cal]], N[order[n_cal:]]

        ctx = torch.nn.Parameter(self._init_ctx())
        optimizer = torch.optim.Adam([ctx], lr=self.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(self.steps, 1))
        pos = torch.full((len(T),), TARGET, device=T.device)
        neg = torch.full((len(N_train),), NON_TARGET, device=T.device)
        adv_labels = torch.full((len(T),), NON_TARGET, device=T.device)
        use_adv = self.adv_weight > 0 and self.adv_eps > 0
        self.loss_curve_ = []
        for _ in range(self.steps):
            text = F.normalize(self._encode_prompts(ctx), dim=-1)
            # 1. targets as target, negatives as non-target; the two classes weigh the same
            loss_pos = F.cross_entropy(self._logits(T, text), pos)
            loss_neg = F.cross_entropy(self._logits(N_train, text), neg, reduction="sum")
            n_neg = float(len(N_train))
            # 2. hard negatives: targets pushed just across towards non-target, join the non-target class
            if use_adv:
                adv = self._hard_negatives(T, text)
                loss_neg = loss_neg + self.adv_weight * F.cross_entropy(self._logits(adv, text), adv_labels,
                                                                        reduction="sum")
                n_neg += self.adv_weight * len(T)
            loss = loss_pos + loss_neg / n_neg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            self.loss_curve_.append(float(loss.detach()))
        self._set_ctx(ctx.detach())
        self.negative_scores_ = self._scores(N_cal)
        self.offset_ = float(np.quantile(self.negative_scores_, 1.0 - self.false_match_rate))
        return self

    # ------------------------------------------------------------ scoring
    def _text_features(self) -> torch.Tensor:
        if self._text_cache is None:
            with torch.no_grad():
                self._text_cache = F.normalize(self._encode_prompts(self.ctx_.to(self._device())), dim=-1)
        return self._text_cache

    def _scores(self, X: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            logits = self._logits(X, self._text_features()).double()
        return (logits[:, TARGET] - logits[:, NON_TARGET]).cpu().numpy()

    def score_samples(self, X: Any) -> np.ndarray:
        """Log-odds of ``P(target | image)``, ``(n_samples,)``, for CLIP image embeddings ``X``
        ``(n_samples, embed_dim)``: higher = more likely the target generator.

        Log-odds rather than the probability so scores do not saturate at 1.0; see :meth:`predict_proba`.
        """
        self.check_is_fitted()
        self._setup()
        return self._scores(self._as_features(X, "X"))

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n_samples, 2)``: columns ``P(non-target)``, ``P(target)`` (the order of ``predict``'s -1, +1)."""
        p = 1.0 / (1.0 + np.exp(-self.score_samples(X)))
        return np.stack([1.0 - p, p], axis=1)

    def calibration_negatives(self) -> np.ndarray | None:
        return getattr(self, "negative_scores_", None)

    # ------------------------------------------------------------ images
    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The distinct crops of one image, ``(n_views, 3, size, size)``, as :attr:`preprocess_cfg` says."""
        if getattr(self, "_transform", None) is None:
            self._transform = image_transform(self.preprocess_cfg)
        return self._transform(image)

    def encode(self, prepared: list[torch.Tensor]) -> np.ndarray:
        """CLIP image embeddings ``(len(prepared), embed_dim)`` of a batch of :meth:`prepare` outputs."""
        return self.encode_images(torch.cat(prepared), n_views=[len(v) for v in prepared])

    @torch.inference_mode()
    def encode_images(self, x: torch.Tensor, n_views: int | Sequence[int] = 1, batch_size: int = 64) -> np.ndarray:
        """L2-normalised ``model.encode_image`` features, float32 ``(n_images, embed_dim)``.

        ``x`` holds each image's views in turn (``n_views`` per image, or one count per image),
        preprocessed as :attr:`preprocess_cfg` says; the views (crops) of an image are averaged and
        re-normalised, as ``Backbone.encode`` does.
        """
        self._setup()
        parts = [self.model.encode_image(x[i:i + batch_size].to(self._device(), torch.float32), normalize=True)
                 for i in range(0, len(x), batch_size)]
        return average_views(torch.cat(parts).float(), n_views).cpu().numpy()

    # ------------------------------------------------------------ persistence
    def meta_dict(self) -> dict[str, Any]:
        self.check_is_fitted()
        return {"offset_": self.offset_}

    def state_dict(self) -> dict[str, np.ndarray]:
        """``ctx_`` (float32) and, when kept, ``negative_scores_`` (float64)."""
        self.check_is_fitted()
        arrays = {"ctx_": np.ascontiguousarray(self.ctx_.cpu().numpy(), dtype=np.float32)}
        if self.calibration_negatives() is not None:
            arrays["negative_scores_"] = np.asarray(self.negative_scores_, dtype=np.float64)
        return arrays

    @classmethod
    def upgrade_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray], version: int
                      ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Folders saved before the verification package kept ``ctx`` and a one-element ``offset`` array
        (and no negatives' scores)."""
        if "ctx" in arrays:
            meta = {**meta, "offset_": float(np.asarray(arrays["offset"]).reshape(-1)[0])}
            arrays = {"ctx_": arrays["ctx"]}
        return meta, arrays

    @classmethod
    def from_state(cls, params: dict[str, Any], meta: dict[str, Any], arrays: dict[str, np.ndarray],
                   **kwargs: Any) -> "OCCCLIPVerifier":
        """A fitted verifier; ``params`` must hold ``model`` and ``tokenizer`` (see :meth:`from_config`).

        Raises ``ValueError`` when the context does not fit the CLIP and ``n_ctx``.
        """
        names = cls._param_names()
        verifier = cls(**{k: v for k, v in {**params, **kwargs}.items() if k in names})
        verifier._set_ctx(torch.as_tensor(np.asarray(arrays["ctx_"], dtype=np.float32)))
        verifier.offset_ = float(meta["offset_"])
        if "negative_scores_" in arrays:
            verifier.negative_scores_ = np.asarray(arrays["negative_scores_"], dtype=np.float64)
        return verifier

    def _set_ctx(self, ctx: torch.Tensor) -> None:
        """Install fitted prompt contexts (checked against the CLIP and ``n_ctx``)."""
        self._setup()
        width = self._owner.token_embedding.weight.shape[1]
        if tuple(ctx.shape) != (len(CLASS_NAMES), self.n_ctx, width):
            raise ValueError(f"ctx has shape {tuple(ctx.shape)}; this verifier needs "
                             f"{(len(CLASS_NAMES), self.n_ctx, width)}")
        self.ctx_ = ctx.to(self._device())
        self._text_cache = None
        with torch.no_grad():
            self.n_features_in_ = int(self._text_features().shape[-1])

    def to_config(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The config with the CLIP it runs on (``backbone.id``) and its preprocessing."""
        own = {"backbone": {"id": self.backbone_id} if self.backbone_id else None,
               "preprocess_cfg": self.preprocess_cfg.to_dict(), "class_names": list(CLASS_NAMES)}
        return super().to_config({**own, **(config or {})})

    @classmethod
    def from_config(cls, config: dict[str, Any], arrays: dict[str, np.ndarray], **kwargs: Any) -> "OCCCLIPVerifier":
        """Rebuild a saved verifier, loading the CLIP its config records (``backbone.id``) unless ``model`` and
        ``tokenizer`` are passed; other ``kwargs`` (e.g. ``device``) override its parameters.

        Raises ``ZooError`` when the config records no CLIP and none is passed, or holds another type.
        """
        backbone = validate_config(config).get("backbone")
        if "model" not in kwargs:
            if not backbone:
                raise ZooError(f"this {cls.__name__} does not record its CLIP backbone; pass model= and tokenizer=")
            kwargs["model"], kwargs["tokenizer"] = load_open_clip(backbone["id"])
        kwargs.setdefault("backbone_id", backbone["id"] if backbone else None)
        return super().from_config(config, arrays, **kwargs)

    def model_card(self, config: dict[str, Any]) -> str:
        negatives = self.calibration_negatives()
        return CARD_TEMPLATE.format(name=config.get("name", f"occ-clip-{self.target}"), target=self.target,
                                    backbone=self.backbone_id, fmr=self.false_match_rate,
                                    n_negatives=0 if negatives is None else len(negatives))
