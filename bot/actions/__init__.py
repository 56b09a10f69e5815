"""Custom actions served by the Rasa action server (`rasa run actions --actions bot.actions`)."""

from bot.actions.intake import (
    ActionAskConfirmation,
    ActionCancelIntake,
    ActionFinishConfirmation,
    ActionRequestHuman,
    ActionStartIntake,
    ActionSubmitSupplement,
    ActionSupplement,
    ActionWithdraw,
    ValidateConfirmForm,
    ValidateIntakeForm,
    ValidateSupplementForm,
)

__all__ = [
    "ActionAskConfirmation",
    "ActionCancelIntake",
    "ActionFinishConfirmation",
    "ActionRequestHuman",
    "ActionStartIntake",
    "ActionSubmitSupplement",
    "ActionSupplement",
    "ActionWithdraw",
    "ValidateConfirmForm",
    "ValidateIntakeForm",
    "ValidateSupplementForm",
]
