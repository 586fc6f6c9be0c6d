"""Corpora, tokenizers, cached token arrays and batch sampling.

    prepared = prepare_data(cfg.data)            # tokens cached under cache_dir()
    sampler = BatchSampler(prepared.train, seq_len, batch_size, seed)
    x, y = sampler.batch(step, micro)
    for x, y in val_batches(prepared.val, seq_len, n_tokens, batch_size): ...
    tokenizer = load_tokenizer(prepared.dir)     # later, e.g. to sample from a finished run
"""

from ablab.data.cache import cache_dir
from ablab.data.corpora import CorpusText, load_corpus
from ablab.data.registry import CORPORA
from ablab.data.sampler import BatchSampler, val_batches
from ablab.data.tokenizer import Tokenizer, load_tokenizer
from ablab.data.tokens import PreparedData, prepare_data

__all__ = [
    "CORPORA", "BatchSampler", "CorpusText", "PreparedData", "Tokenizer",
    "cache_dir", "load_corpus", "load_tokenizer", "prepare_data", "val_batches",
]
