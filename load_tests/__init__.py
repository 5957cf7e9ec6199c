"""load_tests package."""
