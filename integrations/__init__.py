r"""Adapters to outside frameworks, one module each, importing their framework lazily
(``rcsb_captum.integrations.quantus``). The core library never imports them."""
