"""Writers of results: console, JUnit XML, Markdown, JSON and HTML."""
