"""The auditor's side: reading ISO 9660 and squashfs images directly, and ``asl-verify iso``."""
