"""tegaki (手書き): a workbench for handwritten-digit recognition, from Python and from the shell.

    import tegaki as tg
    (x_train, y_train), (x_test, y_test) = tg.datasets.mnist.load_data()
    model = tg.Sequential([tg.Conv2d(20, 5), tg.MaxPool(2), tg.ReLU(),
                           tg.Flatten(), tg.Dense(10), tg.Softmax()])
    history = model.fit(x_train, y_train, epochs=1, validation_split=0.1)
    print(model.evaluate(x_test, y_test).accuracy)

docs/python.md is the tour. Names are imported when first used, so `import tegaki` is quick and does
not load PyTorch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from tegaki.errors import TegakiError  # noqa: E402

# public name -> the module that defines it
_EXPORTS = {
    "Sequential": "tegaki.model", "History": "tegaki.model", "load": "tegaki.model",
    "load_dataset": "tegaki.datasets", "datasets": "tegaki.datasets",
    "Spec": "tegaki.spec", "load_preset": "tegaki.spec",
    "Conv2d": "tegaki.spec", "MaxPool": "tegaki.spec", "AvgPool": "tegaki.spec", "Dense": "tegaki.spec",
    "Flatten": "tegaki.spec", "Dropout": "tegaki.spec", "BatchNorm": "tegaki.spec", "ReLU": "tegaki.spec",
    "Tanh": "tegaki.spec", "Sigmoid": "tegaki.spec", "LeakyReLU": "tegaki.spec", "ELU": "tegaki.spec",
    "Maxout": "tegaki.spec", "Softmax": "tegaki.spec",
    "Add": "tegaki.spec", "Concat": "tegaki.spec", "GlobalAvgPool": "tegaki.spec",
    "Input": "tegaki.functional",
    "Model": "tegaki.functional",
    "TrainConfig": "tegaki.train", "Predictor": "tegaki.predict", "Evaluation": "tegaki.evaluate",
    "probe": "tegaki.probe", "NumpyNet": "tegaki.glassbox", "gradcheck": "tegaki.glassbox",
    "InputError": "tegaki.arrays", "InputWarning": "tegaki.arrays", "figures": "tegaki.figures",
}

__all__ = ["TegakiError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        value = module if module.__name__ == f"tegaki.{name}" else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tegaki' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
