"""Drive formats: lay a rendered file tree onto a medium, and read one back."""
