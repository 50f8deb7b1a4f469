"""``python -m slidesift.web dir|check``: where the page's runtime goes, and whether it is there."""

from slidesift.web.runtime import main

raise SystemExit(main())
