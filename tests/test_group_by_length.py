"""group_by_length batches training rows of similar length; evaluation must still see the examples in
their order (transformers 5 length-groups evaluation batches too, which silently paired predictions with
the wrong examples in every predictions file)."""

from __future__ import annotations

import json
import random


def dataset(n: int = 40):
    import datasets

    rng = random.Random(0)
    lengths = [rng.randint(2, 30) for _ in range(n)]
    return datasets.Dataset.from_dict(
        {
            "input_ids": [[5] * k for k in lengths],
            "attention_mask": [[1] * k for k in lengths],
            "labels": [i % 2 for i in range(n)],
        }
    )


def test_evaluation_batches_keep_the_examples_order_under_group_by_length(tiny_bert, tmp_path):
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from peftlab.training.train import ordered_eval_trainer

    ds = dataset()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=4,
        train_sampling_strategy="group_by_length",
        report_to="none",
        use_cpu=True,
    )
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    # the hazard: transformers' own Trainer draws evaluation rows out of order under group_by_length
    assert list(Trainer(model=model, args=args)._get_eval_sampler(ds)) != list(range(len(ds)))
    assert list(ordered_eval_trainer()(model=model, args=args)._get_eval_sampler(ds)) == list(range(len(ds)))


def test_a_length_grouped_run_writes_each_prediction_beside_its_own_example(base_config, tmp_path):
    """End to end: the predictions file's own accuracy is the run's accuracy, row for row in the dev file's
    order, with dev sentences of very different lengths and small evaluation batches."""
    from peftlab.config.settings import load_config
    from peftlab.training.train import run

    rng = random.Random(1)
    dev = tmp_path / "dev.tsv"
    rows = []
    for i in range(48):
        label = i % 2
        words = rng.sample(["good", "great", "fine"] if label else ["bad", "awful", "poor"], 1) * rng.randint(1, 12)
        rows.append((" ".join(words), "pos" if label else "neg"))
    dev.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    overrides = [x for x in base_config if not x.startswith("validation_file=")]
    overrides += [f"validation_file={dev}", "group_by_length=true", "eval_batch_size=4", "epochs=2", "run_name=g"]
    run(load_config(None, overrides))
    run_dir = tmp_path / "runs" / "g"
    preds = [json.loads(line) for line in (run_dir / "predictions_validation.jsonl").read_text().splitlines()]
    assert [p["text"] for p in preds] == [s for s, _ in rows]
    result = json.loads((run_dir / "result.json").read_text())
    from_file = sum(p["prediction"] == p["label"] for p in preds) / len(preds)
    assert abs(from_file - result["metrics_best"]["accuracy"]) < 1e-9


def test_the_length_grouped_order_depends_on_seed_and_epoch_not_on_the_global_random_state():
    """transformers draws the grouped order from the global random state, which a resumed run restores as it
    was mid-epoch (so a resumed run drew another order); peftlab's is drawn from (seed, epoch) alone."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from peftlab.training.train import seeded_length_groups

    lengths = [random.Random(i).randint(1, 50) for i in range(64)]

    def order(seed: int, epoch: int, global_state: int) -> list[int]:
        torch.manual_seed(global_state)
        sampler = seeded_length_groups(LengthGroupedSampler(8, lengths=lengths), seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(42, 1, 0) == order(42, 1, 123)
    assert sorted(order(42, 1, 0)) == list(range(64))
    assert order(42, 1, 0) != order(42, 2, 0) and order(42, 1, 0) != order(7, 1, 0)
    drawn = []
    for global_state in (0, 123):  # the hazard, in transformers' own sampler
        torch.manual_seed(global_state)
        drawn.append(list(LengthGroupedSampler(8, lengths=lengths)))
    assert drawn[0] != drawn[1]


def test_group_by_length_is_on_by_default_for_encoder_sentence_classification_only(tiny_bert, tiny_llama):
    from transformers import AutoModel

    from peftlab.config.settings import load_config
    from peftlab.models.loading import load_causal_lm, resolve_model
    from peftlab.training.train import group_by_length

    cfg = load_config(None, [])
    assert cfg.train.group_by_length == "auto"
    assert group_by_length(cfg, AutoModel.from_pretrained(tiny_bert)) is True
    assert group_by_length(cfg, load_causal_lm(resolve_model(tiny_llama), "float32")) is False
    for task in ("ner", "qa"):  # the three-seed evidence is sentence classification's
        assert group_by_length(load_config(None, [f"task={task}"]), AutoModel.from_pretrained(tiny_bert)) is False
