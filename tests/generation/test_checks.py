"""The deterministic checks between a sentence and its passage: each must fire on the error it is
for, and stay silent on faithful restatements."""

from __future__ import annotations

import pytest

from core.models import SupportCheck
from generation.checks import Evidence, FactChecker, confirms, quantities
from tests.helpers import retrieved

ARTICLE_33 = retrieved(
    "art-33",
    section="Chapter IV > Section 2 > Article 33 — Notification of a personal data breach",
    section_path="Chapter IV > Section 2 > Article 33 — Notification of a personal data breach",
    text=(
        "1. In the case of a personal data breach, the controller shall without undue delay and, "
        "where feasible, not later than 72 hours after having become aware of it, notify the "
        "personal data breach to the supervisory authority competent in accordance with Article "
        "55, unless the personal data breach is unlikely to result in a risk to the rights and "
        "freedoms of natural persons.\n"
        "2. The processor shall notify the controller without undue delay after becoming aware "
        "of a personal data breach.\n"
        "3. Infringements are subject to fines up to EUR 10 000 000, or up to 2 % of the total "
        "worldwide annual turnover, from 25 May 2018."
    ),
).chunk
RULE = retrieved(
    "rule",
    section="",
    section_ref="3.19.6",
    text=(
        "A Reporting Entity must not make a distribution unless it has notified the Regulator. "
        "The Regulator may extend the period to ten business days. A Payment Account in which "
        "Relevant Money is held, must: (a) be designated as such; and (b) be used only for "
        "Payment Transactions."
    ),
).chunk


@pytest.fixture(scope="module")
def checker() -> FactChecker:
    return FactChecker()


def finding(checker: FactChecker, claim: str, *chunks: object) -> tuple[str | None, str | None]:
    mismatch = checker.run(claim, Evidence.of(chunks or [ARTICLE_33]))  # type: ignore[arg-type]
    return (mismatch.kind.value, mismatch.reason) if mismatch else (None, None)


class TestFactChecker:
    @pytest.mark.parametrize(
        "claim",
        [
            "The controller must notify a personal data breach to the supervisory authority "
            "within 72 hours, unless it is unlikely to result in a risk.",
            "Within seventy-two hours the controller shall notify the supervisory authority.",
            "The processor must notify the controller without undue delay.",
            "Under Art. 33, the controller must notify the breach to the supervisory authority.",
            "Fines reach EUR 10 million or 2 percent of turnover.",
            "The rules apply from 25 May 2018.",
            "The controller has to notify the breach.",  # says less than the passage: fine
        ],
    )
    def test_faithful_restatements_pass(self, checker: FactChecker, claim: str) -> None:
        assert finding(checker, claim) == (None, None)

    @pytest.mark.parametrize(
        ("claim", "reason"),
        [
            (
                "The controller must notify the supervisory authority within 48 hours.",
                "duration 48 hours not in the cited passage (it says 72 hours)",
            ),
            (
                "The controller must notify the supervisory authority within 3 days.",
                "duration 3 days not in the cited passage (it says 72 hours)",
            ),
            (
                "Fines reach EUR 20 million.",
                "amount EUR 20 million not in the cited passage (it says EUR 10 000 000)",
            ),
            ("Fines reach 4 % of turnover.", "percentage 4 % not in the cited passage"),
            ("The rules apply from 25 June 2018.", "date 25 June 2018 not in the cited passage"),
            ("The breach affects 500 people.", "number 500 not in the cited passage"),
        ],
    )
    def test_changed_quantities_are_named(
        self, checker: FactChecker, claim: str, reason: str
    ) -> None:
        kind, found = finding(checker, claim)
        assert kind == SupportCheck.QUANTITY
        assert found is not None and found.startswith(reason)

    @pytest.mark.parametrize(
        ("claim", "says"),
        [
            ("The controller may notify the breach to the supervisory authority.", "'may notify'"),
            ("The controller shall not notify the breach to the authority.", "'shall not notify'"),
            ("The controller is prohibited from notifying the breach.", "prohibited"),
        ],
    )
    def test_flipped_modality(self, checker: FactChecker, claim: str, says: str) -> None:
        kind, reason = finding(checker, claim)
        assert kind == SupportCheck.MODALITY
        assert reason is not None and says in reason

    def test_modality_of_a_listed_obligation_and_a_prohibition(self, checker: FactChecker) -> None:
        listed = "The Payment Account must be used only for Payment Transactions."
        assert finding(checker, listed, RULE) == (None, None)
        assert finding(checker, "A Reporting Entity may make a distribution.", RULE)[0] == (
            SupportCheck.MODALITY
        )
        allowed = "The Regulator can extend the period to ten business days."
        assert finding(checker, allowed, RULE) == (None, None)  # "can" restates "may"

    def test_verbs_ending_in_ly_are_verbs(self, checker: FactChecker) -> None:
        rule = retrieved(
            "weights", text="An Authorised Person must apply a risk weight of 150% to Exposures."
        ).chunk
        kind, reason = finding(
            checker, "An Authorised Person may apply a risk weight of 150%.", rule
        )
        assert kind == SupportCheck.MODALITY and reason is not None and "'must apply'" in reason
        assert finding(checker, "An Authorised Person must apply a 150% risk weight.", rule) == (
            None,
            None,
        )

    def test_of_several_phrases_governing_a_verb_the_one_on_the_same_matter(
        self, checker: FactChecker
    ) -> None:
        rule = retrieved(
            "netting",
            text="(a) on-balance sheet Exposures must be net of specific allowances; and "
            "(b) loans must not be netted with Deposits.",
        ).chunk
        assert finding(checker, "Loans must be netted with Deposits.", rule)[0] == (
            SupportCheck.MODALITY
        )
        assert finding(checker, "Loans must not be netted with Deposits.", rule) == (None, None)
        assert finding(checker, "Exposures must be net of specific allowances.", rule) == (
            None,
            None,
        )

    def test_a_synonym_verb_on_the_same_matter(self, checker: FactChecker) -> None:
        rule = retrieved(
            "trading",
            text="A Recognised Investment Exchange shall not permit trading of Securities on its "
            "facilities unless those Securities are admitted to the Official List.",
        ).chunk
        exchange = "A Recognised Investment Exchange"
        flipped = f"{exchange} must allow trading of Securities on its facilities."
        assert finding(checker, flipped, rule)[0] == SupportCheck.MODALITY
        kept = f"{exchange} must not allow trading of Securities on its facilities."
        assert finding(checker, kept, rule) == (None, None)

    def test_what_something_can_do_is_no_permission(self, checker: FactChecker) -> None:
        rule = retrieved(
            "insurance",
            text="A facility must have insurance arrangements in place. Other jurisdictions can "
            "meet these requirements.",
        ).chunk
        kind, reason = finding(checker, "They may hold insurance against fraud.", rule)
        assert kind == SupportCheck.MODALITY and reason is not None and "no permission" in reason

    def test_exception_the_passage_does_not_make(self, checker: FactChecker) -> None:
        rule = retrieved("r", text="The processor shall notify the controller.").chunk
        kind, reason = finding(checker, "The processor shall notify the controller unless "
                               "the breach is minor.", rule)  # fmt: skip
        assert kind == SupportCheck.EXCEPTION and reason is not None and "'unless'" in reason
        assert finding(checker, "The controller must notify unless no risk arises.") == (None, None)

    def test_actor_not_named_or_not_the_one_who_acts(self, checker: FactChecker) -> None:
        kind, reason = finding(checker, "The deployer must notify the supervisory authority.")
        assert kind == SupportCheck.ACTOR
        assert reason is not None and reason.startswith("actor 'deployer' not in the cited")
        kind, reason = finding(checker, "The Regulator must not make a distribution.", RULE)
        assert kind == SupportCheck.ACTOR and reason is not None and "reporting entity" in reason
        # Plural, article and capitals are the same actor.
        assert finding(checker, "Processors shall notify the controller.") == (None, None)

    def test_references_from_the_text_or_the_section(self, checker: FactChecker) -> None:
        kind, reason = finding(checker, "Under Article 34, the controller notifies the breach.")
        assert (kind, reason) == (SupportCheck.REFERENCE, "reference Article 34 not in the cited "
                                  "passage")  # fmt: skip
        assert finding(checker, "Article 55 names the supervisory authority.") == (None, None)
        assert finding(checker, "Rule 3.19.6 restricts distributions.", RULE) == (None, None)
        assert finding(checker, "Rule 3.19.7 restricts distributions.", RULE)[0] == (
            SupportCheck.REFERENCE
        )

    def test_only_the_enabled_checks_run(self) -> None:
        quantity_only = FactChecker([SupportCheck.QUANTITY])
        assert finding(quantity_only, "The deployer must notify the authority.") == (None, None)
        with pytest.raises(ValueError, match="checks must be some of"):
            FactChecker([SupportCheck.QUOTED])
        with pytest.raises(ValueError):
            FactChecker([])


class TestQuantities:
    def test_numbers_that_name_things_are_not_quantities(self) -> None:
        text = "Article 33(1) of Regulation (EU) 2016/679, point (a), Rule 3.19.6 and CET1."
        assert quantities(text) == ()

    def test_normalised_values(self) -> None:
        (spelt,) = quantities("within seventy-two hours")
        (digits,) = quantities("within 72 hours")
        assert (spelt.kind, spelt.value, spelt.unit) == ("duration", 72.0, "hour")
        assert spelt.satisfied_by(digits) and digits.satisfied_by(spelt)
        (days,) = quantities("within 3 days")
        assert not days.satisfied_by(digits)  # units are never converted
        (working,) = quantities("10 working days")
        (plain,) = quantities("10 days")
        assert plain.satisfied_by(working) and not working.satisfied_by(plain)


def passage(text: str) -> object:
    return retrieved("p", section="", text=text).chunk


class TestGeneralRules:
    """Rules found on the perturbed gold sentences of benchmarks/verification.py, each with the
    case where it must not fire."""

    def test_a_labelled_number_is_a_name(self, checker: FactChecker) -> None:
        rule = passage(
            "Excluding all Tier 2 capital instruments with residual maturity of less than one "
            "year, and Exposures with a Credit Quality Grade 1."
        )
        kind, reason = finding(checker, "Exclude Tier 1 capital instruments.", rule)
        assert kind == SupportCheck.QUANTITY and reason is not None and "Tier 2" in reason
        assert finding(checker, "Exclude Tier 2 capital instruments.", rule) == (None, None)
        assert finding(checker, "Exposures with a Credit Quality Grade of 1.", rule) == (None, None)

    def test_a_spelt_out_count_backs_its_digits(self, checker: FactChecker) -> None:
        rule = passage("The Regulator may impose two types of restriction.")
        assert finding(checker, "The Regulator may impose 2 types of restriction.", rule) == (
            None,
            None,
        )
        assert finding(checker, "The Regulator may impose 3 types of restriction.", rule)[0] == (
            SupportCheck.QUANTITY
        )

    def test_comply_or_explain_is_an_exception(self, checker: FactChecker) -> None:
        rule = passage("A Reporting Entity is expected to comply with the Code, or explain its "
                       "non-compliance.")  # fmt: skip
        claim = "A Reporting Entity must comply with the Code unless it explains why not."
        assert finding(checker, claim, rule) == (None, None)
        plain = passage("A Reporting Entity is expected to comply with the Code.")
        assert finding(checker, claim, plain)[0] == SupportCheck.EXCEPTION

    def test_the_regulator_speaking_as_we(self, checker: FactChecker) -> None:
        rule = passage("In deciding, we will take into account the nature of the contravention.")
        claim = "The Regulator will take into account the nature of the contravention."
        assert finding(checker, claim, rule) == (None, None)
        kind, _ = finding(checker, "The deployer will take into account the nature.", rule)
        assert kind == SupportCheck.ACTOR

    def test_a_phrase_on_another_matter_does_not_govern_the_verb(
        self, checker: FactChecker
    ) -> None:
        rule = passage(
            "The report will disclose an outstanding claim. The second is where an Insider "
            "discloses Inside Information to another person otherwise than in the proper course "
            "of his employment."
        )
        claim = "An Insider must not disclose Inside Information to another person."
        assert finding(checker, claim, rule) == (None, None)
        ruled = passage("An Insider must not disclose Inside Information to another person.")
        kind, reason = finding(checker, "An Insider may disclose Inside Information.", ruled)
        assert kind == SupportCheck.MODALITY and reason is not None and "'must not" in reason

    def test_a_necessity_in_a_condition_is_no_rule(self, checker: FactChecker) -> None:
        rule = passage(
            "The power to require assistance may include requiring a person to do a physical act "
            "to advance an investigation."
        )
        claim = "An Investigator can ask for help when they need to advance the investigation."
        assert finding(checker, claim, rule) == (None, None)
        allowed = passage("The firm may notify the Regulator of the change.")
        assert finding(checker, "The firm needs to notify the Regulator.", allowed)[0] == (
            SupportCheck.MODALITY
        )

    def test_a_conditional_permission_restates_a_prohibition_with_an_exception(
        self, checker: FactChecker
    ) -> None:
        rule = passage(
            "A Listed Entity must not issue more Equity Securities than the maximum without the "
            "approval of the holders of Ordinary Securities."
        )
        conditional = "A Listed Entity can issue more Equity Securities if the holders approve."
        assert finding(checker, conditional, rule) == (None, None)
        kind, reason = finding(checker, "A Listed Entity can issue more Equity Securities.", rule)
        assert kind == SupportCheck.MODALITY and reason is not None and "'must not issue'" in reason

    def test_an_obligation_restating_the_bound_of_a_permission(self, checker: FactChecker) -> None:
        rule = passage(
            "The deferred publication may be authorised, for a period no longer than the period "
            "specified for the class of Financial Instrument concerned, provided that it is large. "
            "Instruments shall be classified by their turnover."
        )
        claim = "The deferral must be within the period specified for the class of Financial "
        assert finding(checker, claim + "Instrument concerned.", rule) == (None, None)
        kind, _ = finding(checker, "The deferral must not be within the period specified for the "
                          "class of Financial Instrument concerned.", rule)  # fmt: skip
        assert kind == SupportCheck.MODALITY

    def test_a_prohibition_restating_an_exclusion(self, checker: FactChecker) -> None:
        claim = "They should not include exposures to central government and central banks."
        excluded = passage(
            "Credit exposures are those for which RWAs have to be calculated, other than those "
            "that fall into the following classes: (a) Central government and central bank."
        )
        assert finding(checker, claim, excluded) == (None, None)
        included = passage(
            "Credit exposures to central government and central banks have to be calculated."
        )
        assert finding(checker, claim, included)[0] == SupportCheck.MODALITY

    def test_actor_names_do_not_align_clauses(self, checker: FactChecker) -> None:
        rule = passage(
            "The system shall be provided to the deployer in such a way that persons can oversee "
            "it. Measures may be identified and built into the system by the provider."
        )
        claim = "Measures may be built into the system by the provider or by the deployer."
        assert finding(checker, claim, rule) == (None, None)
        age = passage("Member States may provide by law for a lower age for those purposes.")
        kind, _ = finding(checker, "Member States may not set a lower age for those purposes.", age)
        assert kind == SupportCheck.MODALITY

    def test_more_than_is_exceeding(self, checker: FactChecker) -> None:
        rule = passage("Any charges imposed must not exceed the Provider's actual costs.")
        kind, reason = finding(checker, "The charges must be more than the actual costs.", rule)
        assert kind == SupportCheck.MODALITY and reason is not None and "'must not" in reason
        kept = "The charges must not be more than the Provider's actual costs."
        assert finding(checker, kept, rule) == (None, None)
        assert finding(checker, "The charges must be within the actual costs.", rule) == (
            None,
            None,
        )

    def test_a_prohibition_of_what_the_passage_states_plainly(self, checker: FactChecker) -> None:
        rule = passage(
            "Rule 11.12.1 applies provided that: (1) any subsequent disclosure references the "
            "earlier disclosure that was in compliance with Rule 11.12.1; and (2) the entity "
            "confirms that it is not aware of any new information."
        )
        claim = "A subsequent disclosure must not reference the earlier disclosure."
        kind, reason = finding(checker, claim, rule)
        assert (
            kind == SupportCheck.MODALITY
            and reason is not None
            and "without a negation" in (reason)
        )
        denied = passage("A subsequent disclosure does not reference the earlier disclosure.")
        assert finding(checker, claim, denied) == (None, None)
        other = passage("The earlier disclosure references the Mineral Resources.")
        assert finding(checker, claim, other) == (None, None)  # another matter: too few words

    def test_a_positive_phrase_on_what_the_passage_excludes(self, checker: FactChecker) -> None:
        rule = passage(
            "Credit exposures are those for which RWAs have to be calculated, other than those "
            "that fall into the following classes: (a) Central government and central bank; (b) "
            "Public sector enterprises."
        )
        claim = "Credit exposures should include exposures to central government, central banks "
        kind, reason = finding(checker, claim + "and public sector enterprises.", rule)
        assert kind == SupportCheck.MODALITY and reason is not None and "excludes" in reason
        kept = "Credit exposures should include all exposures other than central government, "
        assert finding(checker, kept + "central banks and public sector enterprises.", rule) == (
            None,
            None,
        )
        assert finding(checker, "Credit exposures should include loans to firms.", rule) == (
            None,
            None,
        )

    def test_paragraph_numbers_are_no_quantities(self, checker: FactChecker) -> None:
        rule = passage(
            "The period may be extended by two further months.\n8. The Commission shall adopt "
            "delegated acts. 9. It shall act within 3 months."
        )
        claim = "The period may be extended by 8 further months."
        kind, reason = finding(checker, claim, rule)
        assert kind == SupportCheck.QUANTITY and reason is not None and "number 8" in reason
        assert finding(checker, "The period may be extended by 2 further months.", rule) == (
            None,
            None,
        )
        assert finding(checker, "It shall act within 3 months.", rule) == (None, None)

    def test_the_passages_own_chapter_does_not_back_another_on_its_matter(
        self, checker: FactChecker
    ) -> None:
        rule = retrieved(
            "3.18.5",
            section="",
            section_ref="3.18.5",  # Rule 3.18.5: in Chapter 3
            text="Private sector credit exposures are those for which Credit RWAs have to be "
            "calculated in accordance with Chapter 4, other than those to banks.",
        ).chunk
        claim = "Private sector exposures are those that require Credit RWAs calculated under "
        kind, reason = finding(checker, claim + "Chapter 3.", rule)
        assert kind == SupportCheck.REFERENCE and reason is not None and "Chapter 4" in reason
        assert finding(checker, claim + "Chapter 4.", rule) == (None, None)
        # Its own chapter, on a matter the passage cites no chapter for.
        assert finding(checker, "Chapter 3 defines private sector credit exposures.", rule) == (
            None,
            None,
        )

    def test_the_verb_as_a_noun_in_a_passage_phrase_on_the_same_matter(
        self, checker: FactChecker
    ) -> None:
        rule = passage(
            "The Provider and the Customer may agree on charges for any information which is "
            "provided at the request of the Customer where such information is additional."
        )
        flipped = "The Provider must charge the Customer for additional information it requests."
        kind, reason = finding(checker, flipped, rule)
        assert kind == SupportCheck.MODALITY and reason is not None and "'may" in reason
        kept = "The Provider may charge the Customer for additional information it requests."
        assert finding(checker, kept, rule) == (None, None)
        # The noun in a phrase on another matter does not govern the verb.
        other = passage("A Provider must keep records. It may agree on charges with its auditor.")
        assert finding(checker, flipped, other) == (None, None)

    def test_a_short_clause_is_aligned_by_its_subject_too(self, checker: FactChecker) -> None:
        rule = passage(
            "Where the notification is not made within 72 hours, it shall be accompanied by "
            "reasons for the delay. The information may be provided in phases."
        )
        kind, reason = finding(checker, "A late notification may give reasons for the delay.", rule)
        assert kind == SupportCheck.MODALITY and reason is not None and "'shall" in reason
        assert finding(checker, "A late notification must give reasons for the delay.", rule) == (
            None,
            None,
        )
        # A short clause on a matter no phrase of the passage shares stays unaligned.
        assert finding(checker, "A firm may give reasons for its choice of bank.", rule) == (
            None,
            None,
        )

    def test_provided_as_a_participle_does_not_end_the_clause(self, checker: FactChecker) -> None:
        rule = passage(
            "A Customer may agree on charges for information which is provided more frequently "
            "than is specified. A firm must keep records."
        )
        claim = "Firms {} charge for information provided more frequently than specified."
        assert finding(checker, claim.format("must"), rule)[0] == SupportCheck.MODALITY
        assert finding(checker, claim.format("may"), rule) == (None, None)

    def test_a_colon_governs_each_item_of_a_numbered_list(self, checker: FactChecker) -> None:
        rule = passage(
            "The Regulator will: 1. give written notice to the Applicant; The notice will state "
            "why. 2. receive representations from the Applicant; It will normally only hear oral "
            "representations on request. 3. (when it has reached its decision) notify the "
            "Applicant concerned in writing."
        )
        claim = "The Regulator will {} the Applicant of its decision in writing."
        kind, reason = finding(checker, claim.format("not notify"), rule)
        assert kind == SupportCheck.MODALITY
        assert reason is not None and "'will: 1. … notify'" in reason
        assert finding(checker, claim.format("notify"), rule) == (None, None)
        # A restarted numbering is another list: "1. notify" there is not governed by "will:".
        restarted = passage(
            "The Regulator will: 1. give written notice to the Applicant. Separately: 1. notify "
            "the Applicant in writing of the fees. The Regulator may not notify other persons."
        )
        assert finding(checker, claim.format("not notify"), restarted) == (None, None)

    def test_there_must_be_states_an_obligation(self, checker: FactChecker) -> None:
        rule = passage(
            "An Issuer cannot have Securities admitted to trading unless there is an Approved "
            "Prospectus. An Issuer needs to have its Securities offered by way of an Approved "
            "Prospectus."
        )
        kind, reason = finding(checker, "There may be an Approved Prospectus for trading.", rule)
        assert kind == SupportCheck.MODALITY and reason is not None and "'may be'" in reason
        assert finding(checker, "There must be an Approved Prospectus for trading.", rule) == (
            None,
            None,
        )
        assert finding(checker, "It may be an Approved Prospectus.", rule) == (None, None)

    def test_may_include_restates_a_definition(self, checker: FactChecker) -> None:
        rule = passage(
            "A Spot Commodity is: (a) a good sold for cash and promptly delivered; (b) not a "
            "contract under which delivery is to be made at a future date; and (c) an "
            "Environmental Instrument, where deemed by the Regulator to be a carbon offset."
        )
        claim = "A Spot Commodity may include an Environmental Instrument deemed a carbon offset."
        assert finding(checker, claim, rule) == (None, None)
        # Not where a modal phrase of the passage is on that matter ...
        required = passage(
            "A Petroleum Reporting Entity must ensure the disclosure contains: (1) the types of "
            "permits or licences held, including studies."
        )
        allowed = "A Petroleum Reporting Entity's disclosure may include the types of permits."
        assert finding(checker, allowed, required)[0] == SupportCheck.MODALITY
        # ... nor where the passage defines nothing on it.
        plain = passage("A firm must disclose a report on mining exploration activities.")
        covered = "The report may cover activities and expenses of mining exploration."
        assert finding(checker, covered, plain)[0] == SupportCheck.MODALITY

    def test_what_the_checks_confirm(self) -> None:
        rule = "An Applicant must satisfy the Regulator that it has sufficient working capital."
        # The modal on the same matter with a compatible force, and the actors named.
        assert confirms("The Applicant must satisfy the Regulator that its capital suffices.", rule)
        # Passing is not confirming: no modal, another force, an actor the passage lacks.
        assert not confirms("The Applicant has sufficient working capital.", rule)
        assert not confirms("The Applicant may satisfy the Regulator that it has capital.", rule)
        assert not confirms("The Issuer must satisfy the Regulator that it has capital.", rule)
