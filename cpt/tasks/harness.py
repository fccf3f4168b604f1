"""Our in-memory model as an lm-evaluation-harness model: lm-eval's tasks, prompts and metrics,
our forward pass.

`HarnessLM` is an `lm_eval.api.model.TemplateLM`: lm-eval encodes every (context, continuation)
pair itself (`_encode_pair`, the empty-context prefix), and this class scores the tokens. It runs
under the caller's precision context (the trainer's autocast in the loop), batches requests of
similar length, and never keeps more than about `logit_budget` logits at once.

Across processes (DDP or FSDP) every rank runs the same lm-eval evaluation; the scoring of
log-likelihoods is split between the ranks and gathered, and every rank makes the same number of
forward passes (FSDP gathers weights collectively). Greedy generation runs whole on every rank
(deterministic, so the same on all).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tokenizers import Tokenizer
from torch import nn

from cpt.data.tokenizer import eod_id, start_id

Scored = tuple[float, bool]


class HarnessLM(TemplateLM):
    def __init__(
        self,
        model: nn.Module,
        tokenizer: Tokenizer,
        *,
        context: Callable[[], Any] | None = None,
        batch_size: int = 32,
        logit_budget: int = 2**27,
        quiet: bool = False,
    ) -> None:
        super().__init__()
        self.quiet = quiet  # no progress bars (inside the training loop)
        self.model, self.tokenizer_ = model, tokenizer
        self.context = context or contextlib.nullcontext
        self.batch_size, self.logit_budget = batch_size, logit_budget
        self.max_length = model.config.max_position_embeddings
        self._eot = eod_id(tokenizer)
        self._start = start_id(tokenizer)

    # ---- what lm-eval asks of a TemplateLM ---------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def prefix_token_id(self) -> int:
        """The token before an empty context: the start token if the tokenizer has one."""
        return self._eot if self._start is None else self._start

    @property
    def tokenizer_name(self) -> str:
        return "cpt"

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, **kwargs
    ) -> list[int]:
        """As lm-eval's `hf` model encodes: the start token first unless told otherwise or the
        text already begins with it."""
        ids = self.tokenizer_.encode(string, add_special_tokens=False).ids
        if self._start is None or add_special_tokens is False:
            return ids
        if add_special_tokens is None and string.startswith(self.tok_decode([self._start])):
            return ids
        return [self._start, *ids]

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer_.decode(tokens, skip_special_tokens=False)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Scored]:
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or self.quiet)

    def _loglikelihood_tokens(self, requests: list[Any], disable_tqdm: bool = False, **kwargs):
        """(sum of log p(continuation), whether it is the greedy continuation) per request."""
        pairs = [(list(context), list(continuation)) for _, context, continuation in requests]
        return self._score(pairs)

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of whole texts, in windows of the model's length (as lm-eval's
        own `hf` model does)."""
        pairs, owners = [], []
        for index, request in enumerate(requests):
            windows = get_rolling_token_windows(
                token_list=self.tok_encode(request.args[0]),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(make_disjoint_window, windows):
                pairs.append((list(context), list(continuation)))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._score(pairs)):
            totals[owner] += logprob
        return totals

    @torch.no_grad()
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding until a stop string or `max_gen_toks` tokens."""
        outputs = []
        for request in requests:
            context, options = request.args
            until = options.get("until") or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            budget = int(options.get("max_gen_toks", 256))
            tokens = self.tok_encode(context)[-(self.max_length - 1) :] or [self.prefix_token_id]
            made: list[int] = []
            text = ""
            for _ in range(budget):
                window = (tokens + made)[-self.max_length :]
                last = torch.zeros(1, len(window), dtype=torch.bool)
                last[0, -1] = True
                logits = self._forward(torch.tensor([window]), last)[0]
                token = int(logits.argmax())
                if token == self.eot_token_id:
                    break
                made.append(token)
                text = self.tok_decode(made)
                if any(stop in text for stop in until):
                    break
            for stop in until:
                text = text.split(stop)[0]
            outputs.append(text)
        return outputs

    # ---- scoring ------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """fp32 logits of the positions `at` (a boolean mask of `ids`' shape) alone."""
        device = next(self.model.parameters()).device
        with self.context():
            return self.model(ids.to(device), logits_at=at.to(device)).float()

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[Scored]:
        """This rank's share of the pairs, scored in batches, gathered from every rank."""
        rank, world = _ranks()
        mine = list(range(rank, len(pairs), world))
        batches = list(self._batches(pairs, mine))
        steps = _most_over_ranks(len(batches))  # the same number of forward passes on every rank
        scored: dict[int, Scored] = {}
        for step in range(steps):
            if step < len(batches):
                scored.update(self._score_batch(pairs, batches[step]))
            else:
                one = torch.ones(1, 1, dtype=torch.bool)  # keeps FSDP's collectives even
                self._forward(torch.zeros(1, 1, dtype=torch.long), one)
        everyone = _gather(scored)
        return [everyone[i] for i in range(len(pairs))]

    def _batches(self, pairs: list[Any], indices: list[int]) -> Iterator[list[int]]:
        """Longest first, so padding is small and the first batch shows the memory peak."""
        order = sorted(indices, key=lambda i: -self._length(pairs[i]))
        vocab = self.model.config.vocab_size
        batch: list[int] = []
        for index in order:
            length = self._length(pairs[batch[0]]) if batch else self._length(pairs[index])
            too_many = (len(batch) + 1) * length * vocab > self.logit_budget
            if batch and (len(batch) == self.batch_size or too_many):
                yield batch
                batch = []
            batch.append(index)
        if batch:
            yield batch

    def _length(self, pair: tuple[list[int], list[int]]) -> int:
        return min(len(pair[0]) + len(pair[1]) - 1, self.max_length)

    def _score_batch(self, pairs: list[Any], batch: list[int]) -> dict[int, Scored]:
        rows, spans = [], []
        for index in batch:
            context, continuation = pairs[index]
            whole = (context + continuation)[-(self.max_length + 1) :][:-1]
            rows.append(whole)
            spans.append((len(whole) - len(continuation), len(continuation)))
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
        # only the continuations' positions (row-major, as the targets below): their logits and
        # one log-softmax over them, not the whole batch's
        at = torch.zeros(ids.shape, dtype=torch.bool)
        for r, (start, count) in enumerate(spans):
            at[r, start : start + count] = True
        logprobs = F.log_softmax(self._forward(ids, at), dim=-1).cpu()
        targets = torch.tensor(
            [t for index, (_, count) in zip(batch, spans) for t in pairs[index][1][-count:]]
        )
        picked = logprobs.gather(1, targets[:, None])[:, 0]
        greedy = logprobs.argmax(-1) == targets
        out, at = {}, 0
        for index, (_, count) in zip(batch, spans):
            out[index] = (float(picked[at : at + count].sum()), bool(greedy[at : at + count].all()))
            at += count
        return out


def _ranks() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _most_over_ranks(count: int) -> int:
    if _ranks()[1] == 1:
        return count
    value = torch.tensor([count], dtype=torch.long)
    if torch.distributed.get_backend() == "nccl":
        value = value.cuda()
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return int(value.item())


def _gather(scored: dict[int, Scored]) -> dict[int, Scored]:
    if _ranks()[1] == 1:
        return scored
    parts: list[Any] = [None] * _ranks()[1]
    torch.distributed.all_gather_object(parts, scored)
    return {k: v for part in parts for k, v in part.items()}
