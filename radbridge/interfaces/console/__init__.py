"""The web console's static files (`static/`): plain HTML, ES modules and CSS with no build
step, served under /console/ by `radbridge.interfaces.api_console`."""
