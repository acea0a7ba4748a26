"""Readers of the official metric-learning archives, used by data/prepare.py."""
