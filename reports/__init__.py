"""Rendering of comparison results: JSON, JUnit XML, Markdown, HTML and PNG, written atomically."""
