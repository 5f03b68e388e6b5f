import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HOOK = "clipood_autoregister.pth"


class BuildPyWithHook(build_py):
    """``pip install .``: ship the .pth import hook at the root of site-packages (``data_files``
    would miss editable installs, hence the twin below)."""

    def run(self):
        super().run()
        self.copy_file(HOOK, os.path.join(self.build_lib, HOOK), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, HOOK)]


class EditableWheelWithHook(editable_wheel):
    """``pip install -e``: put the same .pth into the editable wheel's root."""

    def _install_namespaces(self, installation_dir, pth_prefix):
        super()._install_namespaces(installation_dir, pth_prefix)
        self.copy_file(HOOK, os.path.join(installation_dir, HOOK), preserve_mode=0)


setup(
    name="clipood-plugin",
    version="0.1.0",
    description="CLIPood (ICML 2023) for DomainBed and Dassl/CoOp: MMS loss, Beta Moving Average, one learner",
    long_description=open("README.md", encoding="utf-8").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["clipood_plugin", "clipood_plugin.*", "domainbed_adapter",
                                    "domainbed_adapter.*", "dassl_trainers", "dassl_trainers.*"]),
    py_modules=["clipood_autoregister"],
    package_data={"clipood_plugin": ["model_configs/*.json", "paper_results.json", "figure5_panels.json"]},
    install_requires=[
        # 2.5: fused AdamW on the CPU (the non-finite guard skips on its device flag) and
        # torch.serialization.safe_globals (checkpoints read as data)
        "torch>=2.5",
        "torchvision>=0.20",
        "open_clip_torch>=2.24",
        "yacs>=0.1.8",
        "tqdm",
        "matplotlib>=3.5",
        "pillow",
    ],
    extras_require={
        # tensorboard: its scalars are tested; transformers: the SigLIP families' tokenizers are tested
        "test": ["pytest>=7", "tensorboard", "transformers"],
        "hf": ["transformers"],  # open_clip's Hugging Face tokenizers and text towers (SigLIP, SigLIP2, ...)
        "tensorboard": ["tensorboard"],  # `clipood train` and the DomainBed algorithm write scalars with it
        # what the frameworks themselves import (they are not on the package index: clone them), and what
        # Dassl's setup.py needs to build without isolation (setuptools, numpy); Dassl's requirements.txt
        # also pins linters and dev tools, hence its install with --no-deps (README)
        "domainbed": ["wilds", "parameterized", "gdown"],  # gdown: DomainBed's download script
        "dassl": ["gdown", "tabulate", "tensorboard", "scikit-learn", "wilds", "setuptools>=70.1", "numpy"],
    },
    entry_points={
        "console_scripts": ["clipood=clipood_plugin.cli:main"],
        # `clipood summary KIND`: each adapter registers the summary of its runs, so the core names no adapter
        "clipood.summaries": ["domainbed = domainbed_adapter.summary:main",
                              "base2new = dassl_trainers.base2new_summary:main",
                              "imagenet = dassl_trainers.imagenet_summary:main"],
        # where each adapter's framework keeps the learner state in its checkpoints (checkpoint_format.py)
        "clipood.learner_states": ["domainbed = domainbed_adapter.checkpoint:LEARNER_STATE",
                                   "dassl = dassl_trainers.checkpoint:LEARNER_STATE"],
    },
    cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook},
)
