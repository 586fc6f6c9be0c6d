"""Tokenization speed and peak memory of ablab's data pipeline, against two ways of doing it by hand.

    .venv/bin/python benchmarks/data_prep.py                 # ~500 MB, as the acceptance asks
    .venv/bin/python benchmarks/data_prep.py --mb 100 --memmap-tokens 100_000_000   # a quick look

The corpus is the shared Project Gutenberg books ($ABLAB_DATA/gutenberg) repeated to `--mb` MB of
real English text, one .txt file. One tokenizer serves all three ways: a byte-level BPE (GPT-2
style, `--vocab` ids) trained here on the first 20 MB and saved as a tokenizer.json, which ablab
then loads as `data.tokenizer = "hf:PATH"`. Each way runs in a fresh process, so its peak RSS is
its own:
- ablab: `prepare_data` (measure pass, then streaming tokenization into train.bin/val.bin, the
  document tables, fingerprint, meta), from an empty token cache;
- (a) single process, `tokenizer.encode` over the whole text at once (the first `--a-mb` MB of it:
  its memory grows with the text, so the whole corpus would not fit; MB/s does not depend on size);
- (b) `tokenizers`' `encode_batch` over 1 MB chunks cut at line ends, 16 chunks a call, ids written
  to a .bin file as they come (as a careful user would write it).
Targets: ablab's peak RSS under 1.5 GB, and its MB/s at least the faster of (a) and (b).

Then the start of a run on a 1-billion-token prepared folder (`--memmap-tokens`): the time to open
it (sizes, meta, tokenizer and a sampled hash of 64 MiB, never the whole file) and draw the first
training batch, with the process's RSS after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RSS_TARGET_MB = 1536

# Peak RSS from /proc/self/status (VmHWM): ru_maxrss would carry the parent's peak across fork and exec.
PEAK = """def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

ABLAB = """
import json, sys, time
PEAK
from ablab.config import DataConfig
from ablab.data import prepare_data
start = time.perf_counter()
prepared = prepare_data(DataConfig(corpus=sys.argv[1], tokenizer="hf:" + sys.argv[2]))
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": peak_mb(),
                  "tokens": len(prepared.train) + len(prepared.val)}))
"""

WHOLE = """
import json, sys, time
PEAK
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2])
with open(sys.argv[1], "rb") as f:
    text = f.read(int(sys.argv[3])).decode("utf-8", errors="ignore")
start = time.perf_counter()
ids = tok.encode(text, add_special_tokens=False).ids
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": peak_mb(),
                  "tokens": len(ids)}))
"""

BATCHED = """
import json, sys, time
PEAK
import numpy as np
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[2])
start = time.perf_counter()
n = 0
def chunks(path, size=1 << 20):
    rest = b""
    with open(path, "rb") as f:
        while block := f.read(size):
            block = rest + block
            cut = block.rfind(b"\\n") + 1 or len(block)
            rest = block[cut:]
            yield block[:cut].decode("utf-8")
    if rest:
        yield rest.decode("utf-8")
with open(sys.argv[3], "wb") as out:
    batch = []
    for chunk in chunks(sys.argv[1]):
        batch.append(chunk)
        if len(batch) == 16:
            for e in tok.encode_batch(batch, add_special_tokens=False):
                out.write(np.asarray(e.ids, dtype=np.uint16).tobytes()); n += len(e.ids)
            batch = []
    for e in tok.encode_batch(batch, add_special_tokens=False):
        out.write(np.asarray(e.ids, dtype=np.uint16).tobytes()); n += len(e.ids)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": peak_mb(),
                  "tokens": n}))
"""

OPEN_MEMMAP = """
import json, sys, time
PEAK
start = time.perf_counter()
from ablab.data import BatchSampler, tokens
imported = time.perf_counter()
prepared = tokens.open_if_valid(__import__("pathlib").Path(sys.argv[1]))
assert prepared is not None, "the folder did not open"
x, y = BatchSampler(prepared.train, 1024, 32, seed=0).batch(0)
done = time.perf_counter()
print(json.dumps({"import_s": imported - start, "open_and_batch_s": done - imported,
                  "rss_mb": peak_mb(),
                  "tokens": len(prepared.train) + len(prepared.val), "batch": list(x.shape)}))
"""


def child(code: str, *args: str, env: dict | None = None) -> dict:
    code = code.replace("PEAK", PEAK, 1)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"a measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def make_corpus(path: Path, mb: int, data: Path) -> None:
    books = sorted((data / "gutenberg").glob("*.txt"))
    if not books:
        raise SystemExit(f"no books in {data / 'gutenberg'}; set ABLAB_DATA to the shared data folder")
    text = "\n\n".join(b.read_text(encoding="utf-8", errors="ignore") for b in books).encode()
    with path.open("wb") as out:
        written = 0
        while written < mb * 1_000_000:
            part = text[: mb * 1_000_000 - written]
            part = part[: part.rfind(b"\n") + 1] or part
            out.write(part)
            written += len(part)


def train_tokenizer(corpus: Path, vocab: int, into: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    with corpus.open("rb") as f:
        sample = f.read(20_000_000).decode("utf-8", errors="ignore")
    hf.train_from_iterator([sample], trainers.BpeTrainer(vocab_size=vocab, show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    into.mkdir(parents=True, exist_ok=True)
    hf.save(str(into / "tokenizer.json"))
    return into / "tokenizer.json"


def make_memmap_folder(n_tokens: int, into: Path) -> Path:
    """A prepared folder of `n_tokens` byte tokens, written straight to disk (tokens.store would hold
    them in memory first)."""
    import numpy as np

    from ablab.data import tokens
    from ablab.data.tokenizer import ByteTokenizer

    temp = into / "build"
    temp.mkdir(parents=True)
    n_val = n_tokens // 100
    rng = np.random.default_rng(0)
    for name, count in (("train.bin", n_tokens - n_val), ("val.bin", n_val)):
        with (temp / name).open("wb") as out:
            for start in range(0, count, 1 << 26):
                out.write(rng.integers(0, 256, min(1 << 26, count - start), dtype=np.uint16).tobytes())
    docs = (np.array([[n_tokens - n_val, n_tokens - n_val]]), np.array([[n_val, n_val]]))
    meta = {"corpus": "synthetic", "source": "benchmark", "train_bytes": n_tokens - n_val, "val_bytes": n_val}
    return tokens._finish(temp, into / "prepared", ByteTokenizer(), "uint16", *docs, meta).dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="corpus size in MB (default 500)")
    parser.add_argument("--a-mb", type=int, default=100, help="MB that (a) encodes in one call (default 100)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--memmap-tokens", type=int, default=1_000_000_000)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ABLAB_DATA", ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ablab-data-prep-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "books.txt"
        make_corpus(corpus, args.mb, args.data)
        size_mb = corpus.stat().st_size / 1e6
        tokenizer = train_tokenizer(corpus, args.vocab, tmp / "tok")
        print(f"corpus: {size_mb:,.0f} MB of Gutenberg books, repeated; byte-level BPE of {args.vocab} ids; "
              f"{os.cpu_count()} cores")
        ablab = child(ABLAB, str(corpus), str(tokenizer), env={"ABLAB_CACHE": str(tmp / "cache")})
        whole = child(WHOLE, str(corpus), str(tokenizer), str(args.a_mb * 1_000_000))
        batched = child(BATCHED, str(corpus), str(tokenizer), str(tmp / "b.bin"))
        rates = {"ablab prepare_data (hf: tokenizer)": (ablab, size_mb),
                 f"(a) encode, whole text ({args.a_mb} MB)": (whole, min(args.a_mb, size_mb)),
                 "(b) encode_batch, 1 MB chunks": (batched, size_mb)}
        print(f"{'':38} {'MB/s':>8} {'peak RSS MB':>12} {'tokens':>14} {'seconds':>8}")
        for label, (r, mb) in rates.items():
            print(f"{label:38} {mb / r['seconds']:8.2f} {r['rss_mb']:12,.0f} {r['tokens']:14,} {r['seconds']:8.1f}")
        ours = size_mb / ablab["seconds"]
        best = max(min(args.a_mb, size_mb) / whole["seconds"], size_mb / batched["seconds"])
        print(f"speed: ablab / faster of (a),(b) = {ours / best:.2f} (target >= 1.00)")
        print(f"memory: ablab peak RSS {ablab['rss_mb']:,.0f} MB (target < {RSS_TARGET_MB:,}); "
              f"(a) {whole['rss_mb']:,.0f} MB for {args.a_mb} MB of text")
        if args.memmap_tokens:
            folder = make_memmap_folder(args.memmap_tokens, tmp / "memmap")
            start = child(OPEN_MEMMAP, str(folder))
            print(f"run start on {start['tokens']:,} prepared tokens: open + first batch "
                  f"{start['open_and_batch_s']:.2f} s (imports {start['import_s']:.2f} s), peak RSS "
                  f"{start['rss_mb']:,.0f} MB (the {2 * start['tokens'] / 1e6:,.0f} MB of tokens are not loaded)")


if __name__ == "__main__":
    main()
