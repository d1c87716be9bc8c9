"""The SMLM movie simulator (torch): blinking emitters, PSF, background and camera noise."""
