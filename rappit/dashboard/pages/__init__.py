"""One module per dashboard page: controllers that parse a form, call a service, render a template."""
