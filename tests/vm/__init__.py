"""Tests of the VM runner itself (reshaper.lab.vm, lab/vm/)."""
