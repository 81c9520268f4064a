"""Run records under outputs/ and the verbs that read them: follow, status, compare, W&B link."""
