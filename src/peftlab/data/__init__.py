"""Data: reading CSV / TSV / JSON(L) / CoNLL / SQuAD / saved HF datasets / `pkg:` files into records,
mixing several training files, the train / validation / test / extra splits, and `peftlab data convert`.

Layer 3. May import: runs, config and the base modules. Knows nothing of models or tasks (`peftlab data
check`, which encodes with a task and a tokenizer, is training/data_check.py).
"""
