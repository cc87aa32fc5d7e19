"""Tools around the product: notifier dev, the demo receiver, notifier bench."""

# Where `notifier receiver` reads its signing secret when --secret is not given: a
# command line is shown to every user by ps, the environment only to its owner.
SECRET_ENV = "NOTIFIER_RECEIVER_SECRET"  # noqa: S105 - a variable name, not a secret
