"""Client wire formats the gateway speaks besides Chat Completions, translated to and from the pipeline's chat form."""
