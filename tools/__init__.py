"""Measuring and reporting tools, outside the runtime package. Run from the project root: python -m tools.NAME"""
