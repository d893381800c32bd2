"""CI: the image x tier matrix, running one cell with its reports, the Allure HTML report."""

TIERS = {"sandbox": "sandbox_tests", "vm": "vmtests"}
