"""TikTok's vocabulary and limits, in one place: its endpoint, the most events a request holds,
the event sources, the standard event names, the values its closed fields take, the user fields.

Only TikTok's own facts live here (§ are to tiktok-events-api.md; S1 and S2 are the sources
``forwarder.tiktok.schema`` cites); what forwarder makes of them lives beside the code that uses
them.
"""

from __future__ import annotations

#: §1: the consolidated Events API 2.0 endpoint (S1, S3, S4, S5).
TRACK_PATH = "/open_api/v1.3/event/track/"
#: §3.1: at most 1,000 events per request, or TikTok rejects the whole request (S1, S4).
MAX_EVENTS = 1000

#: §2.1 (S1 ``enum/event_source.go``): the ``event_source`` values.
EVENT_SOURCES = ("web", "app", "offline", "crm")

#: §8.1 (S1 ``enum/event_type.go``): the standard web events, also offline's and CRM's.
# fmt: off
WEB_EVENTS = (
    "AddPaymentInfo", "AddToCart", "AddToWishlist", "ApplicationApproval", "CompleteRegistration",
    "Contact", "CustomizeProduct", "Download", "FindLocation", "InitiateCheckout", "Lead",
    "Purchase", "Schedule", "Search", "StartTrial", "SubmitApplication", "Subscribe",
    "ViewContent",
)
# fmt: on
#: §8.3: the standard app events (note the casing of LaunchAPP, InAppADClick, InAppADImpr).
# fmt: off
APP_EVENTS = (
    "AchieveLevel", "AddPaymentInfo", "AddToCart", "AddToWishlist", "Checkout", "CompleteTutorial",
    "CreateGroup", "CreateRole", "GenerateLead", "InAppADClick", "InAppADImpr", "InstallApp",
    "JoinGroup", "LaunchAPP", "LoanApplication", "LoanApproval", "LoanDisbursal", "Login",
    "Purchase", "Rate", "Registration", "Search", "SpendCredits", "StartTrial", "Subscribe",
    "UnlockAchievement", "ViewContent",
)
# fmt: on
#: §8.2 (S7, 1 May 2025, web/offline/CRM): renamed events, auto-converted by TikTok.
RENAMED_EVENTS = {"CompletePayment": "Purchase", "SubmitForm": "Lead"}
#: §8.2: soft-deprecated events, supported until 2027 and then sunset, with what to use instead.
SUNSET_EVENTS = {
    "PlaceAnOrder": "Purchase (one Purchase per order, event_id = the order id)",
    "ClickButton": "a standard event for what the click means (Contact, Lead, ...) or a custom one",
}
#: §2.2 (S1 ``Event.Event``): an offline event set takes standard events only; TikTok still
#: converts the renamed ones and supports the soft-deprecated ones until 2027 (§8.2).
OFFLINE_EVENTS = frozenset((*WEB_EVENTS, *RENAMED_EVENTS, *SUNSET_EVENTS))

#: §2.4: the 62 ISO 4217 codes TikTok supports for properties.currency: S1 ``Properties.Currency``
#: and S2 ``PixelProperties.md`` list the same codes (both list PHP twice).
# fmt: off
CURRENCIES = frozenset((
    "AED", "ARS", "AUD", "BDT", "BHD", "BIF", "BOB", "BRL", "CAD", "CHF", "CLP", "CNY",
    "COP", "CRC", "CZK", "DKK", "DZD", "EGP", "EUR", "GBP", "GTQ", "HKD", "HNL", "HUF",
    "IDR", "ILS", "INR", "ISK", "JPY", "KES", "KHR", "KRW", "KWD", "KZT", "MAD", "MOP",
    "MXN", "MYR", "NGN", "NIO", "NOK", "NZD", "OMR", "PEN", "PHP", "PKR", "PLN", "PYG",
    "QAR", "RON", "RUB", "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "UAH", "USD", "VES",
    "VND", "ZAR",
))
# fmt: on
#: §2.4 (S1 ``Properties.ContentType``, S2 ``PixelContent.md``): sku ids or item group ids.
CONTENT_TYPES = frozenset(("product", "product_group"))
#: §2.3 (S1 ``User.AttStatus``): iOS App Tracking Transparency states.
ATT_STATUSES = frozenset(("AUTHORIZED", "DENIED", "NOT_DETERMINED", "RESTRICTED", "NOT_APPLICABLE"))

#: §2.3 and §6: identifiers hashed with SHA-256 and sent as a list of hashes.
HASHED_LIST_KEYS = ("email", "phone", "external_id")
#: §2.3 and §6: identifiers hashed with SHA-256 and sent as one hash.
HASHED_SCALAR_KEYS = ("first_name", "last_name", "zip_code")
#: §2.3 and §6 "Never hash": sent as the application gave them.
PLAIN_KEYS = (
    "ttclid",
    "ttp",
    "ip",
    "user_agent",
    "locale",
    "idfv",
    "att_status",
    "city",
    "state",
    "country",
    "idfa",
    "gaid",
)
#: §2.3: every key of the user object.
USER_KEYS = HASHED_LIST_KEYS + HASHED_SCALAR_KEYS + PLAIN_KEYS
