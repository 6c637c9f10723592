"""The splits a run trains and evaluates on: files read (one or several, mixed), a validation split
split off with the seed where no file gives it, max_samples applied."""

from __future__ import annotations

from peftlab.data.formats import Split, read_records, sample, split_off
from peftlab.errors import UserError


def load_splits(data, seed: int) -> dict[str, Split]:
    """train / validation (/ test, / extra) splits from a DataConfig: files, seeded split, max_samples."""
    if not data.train_file:
        raise UserError("train_file: not set; give the training data file, e.g. train_file: data/train.tsv")
    from peftlab.data.mixing import check_mix, load_mixed

    check_mix(data)
    skipped = []  # every file's left-out rows (on_bad_lines: skip)

    def read_file(*args, **kwargs) -> Split:
        split = read_records(*args, **kwargs)
        skipped.extend(split.skipped)
        return split

    read = lambda p, key: read_file(
        p,
        key,
        data.data_format,
        data.encoding,
        data.delimiter,
        data.header,  # noqa: E731
        data.columns,
        data.on_bad_lines,
    )
    test = read(data.test_file, "test_file") if data.test_file else None
    if isinstance(data.train_file, list):  # several files, mixed
        train, validation = load_mixed(data, seed, read_file, split_off, sample)
        validation = read(data.validation_file, "validation_file") if data.validation_file else validation
        train, test = split_test(train, test, data)
    elif data.validation_file:
        train, test = split_test(read(data.train_file, "train_file"), test, data)
        validation = read(data.validation_file, "validation_file")
    else:
        train, test = split_test(read(data.train_file, "train_file"), test, data)
        by = train.group if data.split_by == "auto" else data.split_by
        train, validation = split_off(train, data.validation_ratio, seed, by)
    splits = {
        "train": sample(train, data.max_samples, seed),
        "validation": sample(validation, data.max_eval_samples, seed),
    }
    if test is not None:
        # test_seed, not the run's: every seed of a sweep is scored on the same test items (paired tests)
        splits["test"] = sample(test, data.max_eval_samples, data.test_seed)
    if data.extra_eval_file:
        splits["extra"] = sample(read(data.extra_eval_file, "extra_eval_file"), data.max_eval_samples, seed)
    # every file's left-out rows, recorded with the run (once, if a file is read for two splits)
    splits["train"].skipped = list({(s["file"], s["line"]): s for s in skipped}.values())
    return splits


def split_test(train: Split, test: Split | None, data) -> tuple[Split, Split | None]:
    """(train, test): test_file's rows, or test_ratio of train split off with test_seed, the same for every
    run seed (so every run of a sweep is scored on the same test items, which the paired tests need)."""
    if test is not None or not data.test_ratio:
        return train, test
    by = train.group if data.split_by == "auto" else data.split_by
    return split_off(train, data.test_ratio, data.test_seed, by, key="test_ratio")
