"""Example guard module: copy it into your project's tests.

The default model's baseline ships in ``baselines/``. For another base, record its baseline once with
``layercheck baseline path/to/base`` and commit ``baselines/``. Then run plain ``pytest`` on every
candidate: ``pytest --layercheck-model=path/to/candidate --layercheck-baseline=smollm2-135m-instruct``
(the name of the trusted model's baseline).
"""

import pytest
import torch


@pytest.mark.layercheck("knowledge", "intact")
def test_knowledge_not_lost():
    """The full model's closed-book recall has not dropped significantly (p_correct: the probability it
    gives the right choice, which multiple-choice cells are judged by)."""


@pytest.mark.layercheck("knowledge", "intact", metric="acc", max_drop=0.05)
def test_knowledge_accuracy_not_lost():
    """The same cell by plain accuracy (argmax is right), as lm-eval reports it."""


@pytest.mark.layercheck("knowledge", "shift", max_shift=0.1)
def test_knowledge_has_not_moved_along_depth():
    """Where knowledge lives: the centre of depth of what removing each layer costs has not moved by a
    tenth of the model's depth or more."""


@pytest.mark.layercheck(capability="knowledge", band="shallow", max_drop=0.05)
def test_knowledge_still_lives_in_the_shallow_layers():
    """Removing shallow layers costs knowledge as much as it did before, not more."""


@pytest.mark.layercheck(capability="reasoning", band="deep")
def test_reasoning_depends_on_deep_layers_as_before():
    """Reasoning accuracy with deep layers removed has not shifted."""


@pytest.mark.layercheck(capability="retrieval", band="intact", min=0.5)
def test_retrieval_floor():
    """Absolute floor: in-context lookup must stay well above chance (needs no baseline)."""


def test_removing_the_first_layer_breaks_recall(layercheck_model, layercheck_ablate):
    """Plain code works too: the fixtures give the model and ablation contexts."""
    tokenizer, model = layercheck_model.tokenizer, layercheck_model.model
    inputs = tokenizer("The capital of France is", return_tensors="pt").to(layercheck_model.device)
    with torch.inference_mode():
        paris = tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
        assert model(**inputs).logits[0, -1].argmax() == paris
        with layercheck_ablate(skip=[0]):
            assert model(**inputs).logits[0, -1].argmax() != paris
