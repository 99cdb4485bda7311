r"""The input checks the package applies to its own arguments, public for plug-ins and adapters
(``rcsb_captum.integrations``, a user's region source or autoencoder) so that their messages
read like the package's: each raises ``TypeError`` / ``ValueError`` naming the argument and what
was expected. The rules themselves live in one private module; this one only names them."""

from ._utils import check_choice, check_int, check_number, format_images

__all__ = ["check_choice", "check_int", "check_number", "format_images"]
