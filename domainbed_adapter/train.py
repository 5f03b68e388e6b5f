"""``python -m domainbed_adapter.train <DomainBed train.py arguments>``: register, then run DomainBed's
train.py as ``__main__`` with the same arguments (for setups without the .pth hook)."""
import runpy

from .registration import register


def main():
    register()
    runpy.run_module("domainbed.scripts.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
