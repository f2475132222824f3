"""The application layer: the command line, benchmark loading, the toy lab's entry-point resolution, server
launch, reports and plots. It imports the library (trainer, rollout, rewards, losses) and the toy lab; nothing
below imports it."""
