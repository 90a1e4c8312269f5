"""cd4ml: continuous delivery for machine learning on TFX, Kubeflow and Seldon Core.

Exact versions live in requirements/*.lock (what the tests saw); the ranges here only say what
the code needs, so the package can also be installed into another locked environment.
"""
from setuptools import find_packages, setup

setup(
    name="cd4ml",
    version="0.1.0",
    description="Continuous delivery for ML: TFX pipeline, Kubeflow runner, Seldon Core serving",
    python_requires=">=3.9",  # the pipeline needs <3.11 (TFX 1.16); the V2 server runs on 3.12
    packages=find_packages(include=["cd4ml", "cd4ml.*", "pipelines", "pipelines.*",
                                    "components", "components.*", "scoring", "scoring.*", "serving", "serving.*"]),
    package_data={"components": ["schema/*.pbtxt", "templates/*.j2"]},
    install_requires=[],  # the lock files are the install path; see Makefile `setup`
    extras_require={
        "pipeline": ["tfx[kfp]==1.16.0", "apache-beam[gcp]==2.59.0", "dill==0.3.1.1",
                     "tf-keras==2.16.0", "scipy", "scikit-learn", "numba", "orjson"],
        "serving": ["seldon-core==1.17.1", "tensorflow==2.16.2", "tf-keras==2.16.0", "scipy", "numba",
                    "orjson"],
    },
    entry_points={"console_scripts": ["cd4ml=cd4ml.cli:main"]},
)
