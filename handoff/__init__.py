"""Where an intake goes after the bot: work orders (built-in backend) and, later, human agents."""
