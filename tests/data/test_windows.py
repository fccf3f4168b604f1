"""Document-aware packing: positions restart and attention never crosses a document boundary."""

from __future__ import annotations

import numpy as np

from cpt.data.prepare import DomainSpec, prepare_domain
from cpt.data.tokenizer import eod_id
from cpt.data.windows import TokenWindows
from tests.helpers import write_jsonl


def test_windows_carry_positions_and_segments():
    tokens = np.arange(100) % 50
    offsets = np.array([0, 7, 30, 31, 64])  # documents of 7, 23, 1, 33, 36 tokens
    windows = TokenWindows(tokens, seq_len=16, offsets=offsets, document_aware=True)
    item = windows[1]  # positions 16..31
    assert item["input_ids"].tolist() == list(range(16, 33))
    assert item["position_ids"].tolist() == [9 + i for i in range(14)] + [0, 0]
    assert item["segment_ids"].tolist() == [0] * 14 + [1, 2]


def test_round_trip_tokens_file_windows(tmp_path, tokenizer):
    texts = [f"document number {i}: " + "lorem ipsum dolor " * (i % 7 + 1) for i in range(50)]
    source = write_jsonl(tmp_path / "c.jsonl", texts)
    prepared = prepare_domain(tmp_path / "data", DomainSpec(str(source), val_tokens=60), tokenizer)
    eod = eod_id(tokenizer)
    # every split decodes back to its documents, each followed by the EOD token
    seen = []
    for split in ("train", "val"):
        tokens, offsets = prepared.tokens(split), prepared.offsets(split)
        assert prepared.meta["dtype"] == "uint16" and tokens.dtype == np.uint16
        ends = list(offsets[1:]) + [len(tokens)]
        for start, end in zip(offsets, ends):
            assert tokens[end - 1] == eod
            seen.append(tokenizer.decode(tokens[start : end - 1].tolist()))
    assert sorted(seen) == sorted(texts)
    # windows of seq_len + 1 overlap by exactly one token and tile the stream
    train = prepared.tokens("train")
    windows = TokenWindows(train, seq_len=16)
    assert len(windows) == (len(train) - 1) // 16
    ids = [windows[i]["input_ids"].numpy() for i in range(len(windows))]
    stitched = np.concatenate([ids[0]] + [w[1:] for w in ids[1:]])
    assert np.array_equal(stitched, train[: len(stitched)])
    assert ids[3][0] == ids[2][-1]
