"""Tools the model may use in a turn: hosted tools (run by OpenAI), function tools (run here) and remote MCP
servers. ``registry.ToolRegistry`` builds each turn's ``tools`` list and runs the function calls."""
