from __future__ import annotations

from stepline.cli.main import main

main()
