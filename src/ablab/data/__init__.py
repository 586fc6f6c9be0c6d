"""Corpora, tokenizers, cached token arrays and batch sampling.

    prepared = prepare_data(cfg.data)            # tokens cached under cache_dir()
    sampler = BatchSampler(prepared.train, seq_len, batch_size, seed)
    x, y = sampler.batch(step, micro)
    for x, y in val_batches(prepared.val, seq_len, n_tokens, batch_size): ...
    tokenizer = load_tokenizer(prepared.dir)     # later, e.g. to sample from a finished run
"""

import importlib

# Each name is imported from its module on first use, so that `ablab.data.cache` (which the command
# line's error boundary finds the crash-report folder with) does not pull in torch via the sampler.
_HOME = {"cache_dir": "cache", "CorpusText": "corpora", "load_corpus": "corpora", "CORPORA": "registry",
         "BatchSampler": "sampler", "val_batches": "sampler", "Tokenizer": "tokenizer",
         "load_tokenizer": "tokenizer", "PreparedData": "tokens", "prepare_data": "prepare", "data_size": "prepare"}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'ablab.data' has no attribute '{name}'")
    return getattr(importlib.import_module(f"ablab.data.{_HOME[name]}"), name)
