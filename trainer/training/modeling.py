"""The multi-task model: one shared encoder (BERT-style or GPT-2-style) and a head per task.

Head parameters are laid out like the matching Hugging Face task model, so a head plus the
encoder can be exported as a standard ``AutoModelFor*`` folder (see ``export.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

from trainer.errors import ConfigError
from trainer.training.config import ModelConfig
from trainer.training.losses import (
    focal_loss,
    in_batch_contrastive,
    mean_pool,
    weighted_cross_entropy,
)

logger = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class HeadSpec:
    """What a head needs to be rebuilt: enough to export it without the training data."""

    name: str
    type: str
    label_names: list[str] | None = None
    text_fields: list[str] = field(default_factory=list)
    loss: str = "cross_entropy"  # cross_entropy | class_weight | focal
    gamma: float = 2.0
    class_weights: list[float] | None = None
    contrastive_scale: float = 20.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "label_names": self.label_names,
            "text_fields": self.text_fields,
            "contrastive_scale": self.contrastive_scale,
        }


class HeadOutput(NamedTuple):
    """A named tuple, so ZeRO-3's module hooks can find the tensors in it."""

    loss: torch.Tensor
    output: torch.Tensor  # logits, scores or embeddings, as the task defines
    tokens: int = 0  # predicted tokens (language modelling)
    features: Any = None  # the encoder's output, when hidden states/attentions were asked


class ClassificationHead(nn.Module):
    """Dropout + linear on the pooled output (BertForSequenceClassification's layout)."""

    def __init__(self, spec: HeadSpec, config: PretrainedConfig) -> None:
        super().__init__()
        self.spec = spec
        self.num_labels = 1 if spec.type == "regression" else len(spec.label_names or [])
        dropout: Any = getattr(config, "classifier_dropout", None)
        if dropout is None:
            dropout = getattr(config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(float(dropout))
        self.classifier = nn.Linear(config.hidden_size, self.num_labels)
        weights = spec.class_weights
        self.class_weights = torch.tensor(weights, dtype=torch.float32) if weights else None

    def forward(self, pooled: torch.Tensor, labels: torch.Tensor | None) -> HeadOutput:
        logits = self.classifier(self.dropout(pooled))
        if self.spec.type == "regression":
            scores = logits.squeeze(-1)
            loss = (
                nn.functional.mse_loss(scores.float(), labels.float())
                if labels is not None
                else scores.sum() * 0.0
            )
            return HeadOutput(loss, scores)
        if labels is None:
            return HeadOutput(logits.sum() * 0.0, logits)
        if self.spec.loss == "focal":
            loss = focal_loss(logits, labels, self.spec.gamma, self.class_weights)
        elif self.spec.loss == "class_weight":
            loss = weighted_cross_entropy(logits, labels, self.class_weights)
        else:
            loss = weighted_cross_entropy(logits, labels)
        return HeadOutput(loss, logits)


class MaskedLMHead(nn.Module):
    """Transform + vocabulary projection (BertForMaskedLM's ``cls.predictions``), untied."""

    def __init__(self, spec: HeadSpec, config: PretrainedConfig) -> None:
        super().__init__()
        self.spec = spec
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None) -> HeadOutput:
        logits = self.decoder(self.transform(hidden))
        return _token_loss(logits, labels)


class CausalLMHead(nn.Module):
    """Vocabulary projection without bias (GPT2LMHeadModel's ``lm_head``), untied."""

    def __init__(self, spec: HeadSpec, config: PretrainedConfig) -> None:
        super().__init__()
        self.spec = spec
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def forward(self, hidden: torch.Tensor, labels: torch.Tensor | None) -> HeadOutput:
        logits = self.lm_head(hidden)
        if labels is None:
            return _token_loss(logits, None)
        return _token_loss(logits[:, :-1], labels[:, 1:])


def _token_loss(logits: torch.Tensor, labels: torch.Tensor | None) -> HeadOutput:
    if labels is None:
        return HeadOutput(logits.sum() * 0.0, logits)
    tokens = int((labels != IGNORE_INDEX).sum())
    flat = logits.reshape(-1, logits.size(-1)).float()
    if tokens == 0:
        return HeadOutput(flat.sum() * 0.0, logits, 0)
    loss = nn.functional.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX)
    return HeadOutput(loss, logits, tokens)


class EmbeddingHead(nn.Module):
    """Mean pooling and in-batch-negatives contrastive loss; no parameters of its own."""

    def __init__(self, spec: HeadSpec, config: PretrainedConfig) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> HeadOutput:
        pooled = mean_pool(hidden, attention_mask)
        half = pooled.size(0) // 2
        anchors, positives = pooled[:half], pooled[half:]
        loss = in_batch_contrastive(anchors, positives, self.spec.contrastive_scale)
        return HeadOutput(loss, pooled)


class DistilledEmbeddingHead(nn.Module):
    """Mean pooling only: the loss is the distance to the teacher's embeddings (Distiller)."""

    def __init__(self, spec: HeadSpec, config: PretrainedConfig) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> HeadOutput:
        pooled = mean_pool(hidden, attention_mask)
        return HeadOutput(pooled.sum() * 0.0, pooled)


_HEADS: dict[str, type[nn.Module]] = {
    "classification": ClassificationHead,
    "regression": ClassificationHead,
    "masked_lm": MaskedLMHead,
    "causal_lm": CausalLMHead,
    "pair_embedding": EmbeddingHead,
    "embedding_distillation": DistilledEmbeddingHead,
}


def build_head(spec: HeadSpec, config: PretrainedConfig) -> nn.Module:
    if spec.type not in _HEADS:
        raise ConfigError(f"unknown task type {spec.type!r} for head {spec.name!r}")
    return _HEADS[spec.type](spec, config)


class MultiTaskModel(nn.Module):
    """``forward(task=..., **batch)`` runs the shared encoder and that task's head.

    The other heads take part with a zero-weighted term so that every parameter receives a
    gradient on every step: ZeRO's gradient partitioning then sees the same parameters on
    every rank whichever task was drawn.
    """

    def __init__(self, encoder: PreTrainedModel, specs: list[HeadSpec]) -> None:
        super().__init__()
        self.encoder: PreTrainedModel = encoder
        self.specs = {spec.name: spec for spec in specs}
        self.heads = nn.ModuleDict({s.name: build_head(s, encoder.config) for s in specs})

    def forward(
        self,
        task: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> HeadOutput:
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if output_hidden_states or output_attentions:
            kwargs.update(
                output_hidden_states=output_hidden_states, output_attentions=output_attentions
            )
        out = self.encoder(**kwargs)
        hidden = out.last_hidden_state
        head = self.heads[task]
        spec = self.specs[task]
        if spec.type in ("classification", "regression"):
            result = head(out.pooler_output, labels)
        elif spec.type in ("pair_embedding", "embedding_distillation"):
            result = head(hidden, attention_mask)
        else:
            result = head(hidden, labels)
        if len(self.heads) > 1:
            idle = sum(self._idle_term(name, hidden, out) for name in self.heads if name != task)
            result = result._replace(loss=result.loss + idle)
        if output_hidden_states or output_attentions:
            result = result._replace(features=out)
        return result

    def _idle_term(self, name: str, hidden: torch.Tensor, out: Any) -> torch.Tensor:
        spec = self.specs[name]
        head: Any = self.heads[name]
        if spec.type in ("classification", "regression"):
            return head.classifier(out.pooler_output[:1]).sum() * 0.0
        if spec.type == "masked_lm":
            return head.decoder(head.transform(hidden[:1, :1])).sum() * 0.0
        if spec.type == "causal_lm":
            return head.lm_head(hidden[:1, :1]).sum() * 0.0
        return hidden.new_zeros(())


def build_encoder(model: ModelConfig, vocab_size: int, pad_token_id: int) -> PreTrainedModel:
    """Load the pretrained encoder, or build one from the architecture (random weights)."""
    if model.pretrained is not None:
        if not (model.pretrained / "config.json").is_file():
            raise ConfigError(f"model.pretrained={model.pretrained} has no config.json")
        encoder = AutoModel.from_pretrained(str(model.pretrained))
        if encoder.config.vocab_size < vocab_size:
            raise ConfigError(
                f"tokenizer vocabulary ({vocab_size}) is larger than the model's "
                f"({encoder.config.vocab_size})"
            )
        return encoder
    arch = model.architecture
    if arch is None:  # excluded by the config validator
        raise ConfigError("model.architecture is required without model.pretrained")
    inner = arch.intermediate_size or 4 * arch.hidden_size
    if arch.kind == "bert":
        bert_config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=arch.hidden_size,
            num_hidden_layers=arch.num_layers,
            num_attention_heads=arch.num_heads,
            intermediate_size=inner,
            max_position_embeddings=arch.max_positions,
            hidden_dropout_prob=arch.dropout,
            attention_probs_dropout_prob=arch.dropout,
            pad_token_id=pad_token_id,
        )
        return BertModel(bert_config)
    gpt_config = GPT2Config(
        vocab_size=vocab_size,
        n_embd=arch.hidden_size,
        n_layer=arch.num_layers,
        n_head=arch.num_heads,
        n_inner=inner,
        n_positions=arch.max_positions,
        resid_pdrop=arch.dropout,
        embd_pdrop=arch.dropout,
        attn_pdrop=arch.dropout,
        pad_token_id=pad_token_id,
    )
    return GPT2Model(gpt_config)


def encoder_kind(config: PretrainedConfig) -> str:
    """``decoder`` for causal models (GPT-2 style), ``encoder`` otherwise."""
    return (
        "decoder"
        if getattr(config, "is_decoder", False) or config.model_type == "gpt2"
        else "encoder"
    )


def init_lm_heads_from_embeddings(model: MultiTaskModel) -> None:
    """Start the (untied) vocabulary projections from the input embeddings."""
    embeddings = model.encoder.get_input_embeddings().weight
    with torch.no_grad():
        for name, module in model.heads.items():
            head: Any = module
            spec = model.specs[name]
            if spec.type == "masked_lm":
                head.decoder.weight.copy_(embeddings)
                head.decoder.bias.zero_()
            elif spec.type == "causal_lm":
                head.lm_head.weight.copy_(embeddings)
