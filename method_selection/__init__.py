"""Choosing a method on evidence: the paired sequential test and the stop rules of a validation race.

Pure functions over per-item outcomes (True = the method failed the item): tested without an LLM.
"""
