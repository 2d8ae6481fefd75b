"""Generate ``tickets.jsonl``: a synthetic support-ticket triage dataset in alpaca format.

Each row is one customer ticket (``input``) and its single triage label
(``output``); the ``instruction`` is the same for every row and lists the labels.
Tickets are composed from hand-written templates: an optional greeting, subject
line or neutral context, one main request, optional follow-up detail, in about
one row in eight a side remark about a *different* topic (so a keyword alone
does not give the label away), an optional closing and signature, then sometimes
an informal rewrite and a typo or two.

Pure Python and seeded, so the output is byte-identical on every run::

    python examples/data/make_tickets.py            # writes examples/data/tickets.jsonl
    python examples/data/make_tickets.py --check    # exits 1 if the file is stale
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

SEED = 1729
ROWS_PER_LABEL = 150
MIN_WORDS, MAX_WORDS = 10, 60
OUT = Path(__file__).with_name("tickets.jsonl")

LABELS = (
    "billing", "technical_issue", "account_access", "shipping",
    "refund", "cancellation", "product_question", "feedback",
)
INSTRUCTION = "Classify this support ticket. Answer with one label: " + ", ".join(LABELS) + "."

# Slot values. Names are invented; emails use the reserved example.com domain.
SLOTS: dict[str, list[str]] = {
    # Electronic goods, for requests about batteries, pairing, firmware and the like.
    "gadget": [
        "SoundPeak X2 headset", "FitBand 3", "Nimbus smart speaker", "VoltCharge power bank",
        "HomeCam mini", "Aria sound bar", "GripPro running watch", "PixelFrame photo frame", "Kettlr smart kettle",
    ],
    "product": [
        "SoundPeak X2 headset", "Brewly coffee maker", "FitBand 3", "TrailLite backpack",
        "AeroDesk standing desk", "Lumo desk lamp", "PixelFrame photo frame", "Kettlr smart kettle",
        "Nimbus smart speaker", "GripPro running watch", "ZenMat yoga mat", "VoltCharge power bank",
        "HomeCam mini", "Aria sound bar", "ChefMate blender", "Orbit phone case",
    ],
    "kitchen": ["Brewly coffee maker", "ChefMate blender", "Kettlr smart kettle"],
    "sized": ["TrailLite backpack", "ZenMat yoga mat", "AeroDesk standing desk", "Orbit phone case", "GripPro running watch"],
    "app": ["the Nimbus app", "the mobile app", "your web dashboard", "the desktop app", "the iOS app", "the Android app"],
    "plan": ["Pro", "Premium", "Family", "Team", "Plus", "Business"],
    "device": [
        "iPhone 13", "Pixel 7", "Samsung Galaxy S22", "Windows 11 laptop", "MacBook Air",
        "iPad", "Chromebook", "Android tablet", "Linux PC",
    ],
    "order": ["#{n5}", "TF-{n6}", "no. {n5}", "#{n6}", "{n6}"],
    "amount": ["${d2}.99", "${d2}.00", "€{d2}.50", "£{d2}", "${d3}.49", "€{d2}"],
    "date": [
        "March 3", "the 14th", "May 21", "June 2", "Monday", "the 5th of this month",
        "October 9", "Friday", "January 28", "Tuesday", "the 30th", "August 12",
    ],
    "days": ["3", "5", "6", "8", "10", "12", "two", "four", "nine", "fourteen"],
    "city": ["Memphis", "Leipzig", "Lyon", "Rotterdam", "Calgary", "Manchester", "Dayton", "Brisbane"],
    "country": ["Canada", "Norway", "Mexico", "Ireland", "Japan", "Portugal", "New Zealand", "Poland"],
    "error": ["E-403", "code 0x80070005", "ERR_502", "error 1012", "SYNC_FAILED", "E17", "code 500"],
    "name": ["Maria", "Tom", "Aisha", "Kenji", "Lucas", "Priya", "Olga", "Sam", "Diego", "Hannah", "Femi", "Chloe"],
    "agent": ["Jake", "Rosa", "Mei", "Andre", "Nadia", "Omar"],
    "email": ["j.doe@example.com", "my work email", "my gmail address", "kim.t@example.com", "my old email"],
    "n": ["2", "3", "5", "10", "25"],
}

# One main request per ticket. The label must follow from the request, read carefully.
CORE: dict[str, list[str]] = {
    "billing": [
        "Why was I charged {amount} on {date}? I don't recognise that payment.",
        "Can you send me a proper invoice for order {order}? Accounting needs it for my expense report.",
        "My credit card expired, how do I put the new one on file?",
        "The payment keeps getting declined at checkout, but the same card works everywhere else.",
        "This month's invoice says {amount} but my {plan} plan is supposed to cost less than that.",
        "How do I add our company VAT number so it shows on future invoices?",
        "Where can I download the receipts for my past payments?",
        "I'm being billed for the {plan} plan even though I'm on the basic tier.",
        "Is it possible to switch from monthly to yearly billing?",
        "Do you accept bank transfer, or is it card only?",
        "The amount taken from my account doesn't match the price I saw at checkout.",
        "There's a pending charge of {amount} from your company on my statement that I didn't authorise.",
        "Please update the billing address on my account, we moved offices.",
        "Got an email saying my payment failed. What do I need to do so the service keeps running?",
        "Why did my subscription go up to {amount} without any notice?",
        "Can I pay for the {product} in instalments?",
        "The discount code I used wasn't applied on the invoice for order {order}.",
        "Sales tax was added to my bill although our organisation is tax exempt.",
        "There's a late fee of {amount} on my account and I paid on time.",
        "I'd like future payments to come from PayPal instead of my Visa card.",
        "My bank shows two identical payments of {amount} on {date}, which one is the real one?",
        "Could the invoice be addressed to my employer rather than to me personally?",
        "Who can explain the line items on my latest statement? I don't understand the extra fees.",
        "The checkout page charged me in dollars, can I be billed in euros instead?",
        "I was charged for {n} seats but our team only has two people.",
    ],
    "refund": [
        "I sent the {product} back on {date} and still haven't received my money.",
        "I'd like my money back for order {order}, the item doesn't fit.",
        "The {product} stopped working after two days. I just want a refund, not a replacement.",
        "When will the refund for my return be processed? It has been {days} days.",
        "You received my return but only credited {amount} instead of the full price.",
        "Please reimburse the {amount} I paid for order {order}, the item I got was not what I ordered.",
        "How long does it take for a refund to show up on my card?",
        "You approved my refund on {date} but nothing has reached my bank account yet.",
        "I was charged after cancelling last month. Please give me that money back.",
        "Is the {product} still eligible for a refund if I bought it six weeks ago?",
        "I accidentally bought the {product} twice. Can I get the money for the second one returned?",
        "Can my refund be paid to PayPal? The original card is closed.",
        "I never used the {plan} upgrade, I'd like the {amount} reimbursed.",
        "I don't want store credit, I asked for the money to go back to my card.",
        "My return was marked as received on {date}. Where is my reimbursement?",
        "The {product} was faulty out of the box. I've already shipped it back, please return my payment.",
        "I want to return the {product} for a full refund, it's unopened.",
        "The deposit of {amount} was supposed to be refundable. Please send it back.",
        "Please credit back the {amount} for the items missing from order {order}, I don't need them resent.",
        "You promised a partial refund of {amount} for the delay. I haven't seen it.",
        "I returned the wrong-size {sized} weeks ago. Still waiting on the money.",
        "Requesting a refund for the annual {plan} plan I bought by mistake yesterday.",
    ],
    "cancellation": [
        "Please cancel my {plan} subscription, effective immediately.",
        "I want to close my account and make sure nothing renews.",
        "How do I stop my membership from renewing next month?",
        "Please cancel order {order}, I ordered it by mistake.",
        "I no longer need the service. End my plan at the close of this billing period.",
        "Can I still cancel the order I placed an hour ago, before it ships?",
        "Please switch off auto-renewal on my account.",
        "I'm moving abroad, so please terminate my contract.",
        "I'd like to unsubscribe from the {plan} plan, it's too expensive for me now.",
        "How can I delete my account completely?",
        "We're switching providers; please end our team's subscription at the end of the month.",
        "The cancel button in {app} does nothing. Can you cancel the subscription for me instead?",
        "Stop the monthly box deliveries please, I don't want them anymore.",
        "I signed up for the free trial and don't want it to turn into a paid plan.",
        "Please cancel the second {product} on order {order}, I only want to keep one.",
        "My dad passed away, we need to close his account.",
        "Don't renew our {plan} licence this year, we won't be using it.",
        "I want out of the {plan} plan. What's the quickest way to quit?",
        "Cancel my pre-order for the {product}, I found it elsewhere.",
        "Please don't charge me again, I'm done with the subscription. Close it today.",
        "Is there a notice period if I want to end my contract early?",
    ],
    "shipping": [
        "Order {order} was supposed to arrive on {date} and it still isn't here.",
        "The tracking number you sent me doesn't work on the courier's website.",
        "Can I change the delivery address for order {order}? I'm moving this week.",
        "Tracking says delivered, but there's no parcel at my door.",
        "Do you deliver to {country}, and how long would it take?",
        "My package has been stuck in {city} for {days} days.",
        "Only half of my order showed up. The {product} wasn't in the box.",
        "The courier left my parcel with a neighbour I've never met.",
        "Can I upgrade order {order} to express delivery?",
        "The driver never came during my delivery slot on {date}.",
        "When will order {order} be dispatched? It still says processing after {days} days.",
        "My parcel was returned to the warehouse. Can you send it out again?",
        "Is it possible to collect my order from a pickup locker instead?",
        "Tracking hasn't moved since {date}. Is my {product} lost?",
        "The package shows as shipped to {city}, but I live somewhere else entirely.",
        "Can you hold my delivery until next week? I'm away until then.",
        "What's the estimated delivery date for the {product} I ordered on {date}?",
        "The parcel is at the customs office in {country} and nobody tells me what to do.",
        "Can the courier leave the box at the back door? I'm not home during the day.",
        "You sent my {product} to my old address. How do I get it redirected?",
        "How much is postage to {country} for a small order?",
    ],
    "account_access": [
        "I can't log in. It says my password is wrong even right after I reset it.",
        "The password reset email never arrives, I've checked spam too.",
        "My account got locked after too many attempts. How do I unlock it?",
        "The two-factor code never comes through to my phone.",
        "I got a new phone and lost my authenticator, so I can't get past the 2FA screen.",
        "Someone changed the email on my account and now I can't sign in.",
        "It says no account exists for {email}, but I've used it for years.",
        "The verification link in my signup email has expired. How do I get a new one?",
        "I keep getting sent back to the sign-in page after entering my details.",
        "How do I change the email address I use to sign in?",
        "My account was suspended for 'suspicious activity'. I didn't do anything.",
        "I forgot my username. Can you help me find it?",
        "Signing in with Google stopped working for me on {app}.",
        "My session expires every few minutes and I have to log back in.",
        "I don't have access to {email} anymore, so I can't get the login code.",
        "The account my husband set up is under his email. How do I get my own login?",
        "It keeps saying 'invalid credentials' on my {device}, but it works on my laptop.",
        "I think my account was hacked, I got a login alert from {country}.",
        "Our admin left the company. How do we regain control of the team workspace?",
        "The security questions don't accept my answers anymore.",
        "My login works but it says my profile is 'disabled' and won't let me in.",
    ],
    "technical_issue": [
        "{app} crashes every time I open the settings page on my {device}.",
        "I get {error} whenever I try to upload a photo.",
        "The {gadget} won't pair with my {device} over Bluetooth.",
        "Syncing between my phone and laptop stopped working after the last update.",
        "Your website is painfully slow and pages keep timing out.",
        "Notifications from {app} stopped showing up on my {device}.",
        "The {gadget} keeps dropping off the wifi every few hours.",
        "The export button produces an empty file every single time.",
        "The firmware update failed halfway and now the {gadget} won't turn on.",
        "Videos won't play in {app}, just a black screen with sound.",
        "The dashboard has shown the wrong numbers since yesterday.",
        "Since the update the battery on my {gadget} drains in an hour.",
        "Search returns nothing even for items I know are there.",
        "{app} is stuck on the loading screen on my {device}.",
        "The {gadget} makes a clicking noise and then shuts itself off.",
        "I keep getting {error} when I try to save my changes.",
        "The touch buttons on the {gadget} don't respond anymore.",
        "Images aren't loading in {app}, I only see grey boxes.",
        "After the update the {gadget} no longer shows up in the companion app.",
        "The page freezes when I click 'save' and then logs {error}.",
        "Audio cuts out on the {gadget} whenever I move more than a metre from my {device}.",
        "Printing from {app} gives me a blank page.",
    ],
    "product_question": [
        "Does the {gadget} work with my {device}?",
        "What's the difference between the basic and the {plan} plan?",
        "Is the {gadget} waterproof, or just splash resistant?",
        "How much storage comes with the {plan} plan?",
        "Do you make the {sized} in a larger size?",
        "Can the {gadget} run on 220V outlets if I take it to Europe?",
        "What's the battery life of the {gadget} on a full charge?",
        "Does the {plan} plan allow more than {n} users?",
        "Can I use {app} offline?",
        "Are the parts of the {kitchen} dishwasher safe?",
        "What material is the {product} made of?",
        "Will the {product} be back in stock soon?",
        "How long is the warranty on the {product}?",
        "Does the {gadget} come with a charger in the box?",
        "Is there a version of the {product} for left-handed people?",
        "Can the {gadget} be wall mounted?",
        "Does {app} have a dark mode?",
        "What are the dimensions of the {product}? I want to check it fits my shelf.",
        "Is the {product} suitable for kids under ten?",
        "Which model would you recommend for a small apartment, the {product} or the bigger one?",
        "Can two people share one {plan} account?",
        "Does the {gadget} support fast charging?",
    ],
    "feedback": [
        "Just wanted to say the new update is fantastic. Great job, team!",
        "{agent} on your chat was really helpful yesterday. Please pass on my thanks.",
        "It would be nice if {app} had a dark mode.",
        "Love the {product}! Best purchase I've made this year.",
        "Suggestion: let us export reports as PDF as well.",
        "The new design is confusing. I liked the old layout better.",
        "Your packaging could use a lot less plastic.",
        "Your customer service has really gone downhill lately. Just letting you know.",
        "Five stars for the {product}, the whole family uses it.",
        "Please consider offering more colours for the {product}.",
        "I've been using {app} for a year and it keeps getting better. Thank you.",
        "The checkout flow feels clunky compared to other shops, just my two cents.",
        "The instruction manual for the {product} was really clear, nice work.",
        "Honestly the {product} is overpriced for what it does. Not impressed.",
        "Would love a widget for the home screen in a future version.",
        "Delivery was quick and the {product} looks great. Happy customer here!",
        "The recent price increase left a bad taste. I'll stay, but I'm not thrilled.",
        "Not a question, just a compliment: {agent} went above and beyond for me.",
        "Idea: a loyalty programme for long-time customers would be great.",
        "The tutorial videos on your site are excellent, they saved me a lot of time.",
        "I find the font in {app} too small to read comfortably. Maybe make it adjustable?",
    ],
}

# Extra detail that follows the main request and agrees with its label.
DETAIL: dict[str, list[str]] = {
    "billing": [
        "The card ends in {card4}.", "I need this sorted before the end of the month.",
        "My account is under {email}.", "This happened on {date}.", "I'm on the {plan} plan.",
    ],
    "refund": [
        "I still have the receipt.", "The return label was used on {date}.", "It was paid by card.",
        "The order number is {order}.", "I've been waiting {days} days now.",
    ],
    "cancellation": [
        "I've been a member since 2019.", "My account is under {email}.", "Please confirm by email.",
        "I don't want to be charged again.", "The order number is {order}.",
    ],
    "shipping": [
        "The order number is {order}.", "I paid for express shipping.", "It's a gift, so it's time sensitive.",
        "The courier's site has no updates.", "I ordered it on {date}.",
    ],
    "account_access": [
        "I've tried on two different browsers.", "I already cleared my cookies.", "This is on my {device}.",
        "My username is the same as my email.", "This started on {date}.",
    ],
    "technical_issue": [
        "I've already tried restarting it.", "This is on my {device}.", "Reinstalling didn't help.",
        "It started on {date}.", "I can send screenshots if needed.",
    ],
    "product_question": [
        "I'm thinking of buying one.", "It's for a gift.", "I couldn't find this on the product page.",
        "I'd buy two if so.", "I'm comparing it with a competitor.",
    ],
    "feedback": [
        "No reply needed.", "Keep it up.", "Just wanted to share.", "I've told my friends about you.",
        "Hope this helps.",
    ],
}

# Side remarks about another topic; they mention that topic without asking for anything.
ASIDE: dict[str, list[str]] = {
    "billing": ["My payment went through fine.", "The invoice itself is correct."],
    "refund": ["I'm not after a refund.", "I don't want my money back."],
    "cancellation": ["I'm not planning to cancel.", "I want to keep my subscription."],
    "shipping": ["The delivery was quick.", "The parcel arrived on time."],
    "account_access": ["I can log in fine.", "My account works normally."],
    "technical_issue": ["The app itself works fine.", "Everything else works fine technically."],
    "product_question": ["I already know how the {product} works.", "No questions about the product itself."],
    "feedback": ["I love the {product} otherwise.", "Great service overall, by the way."],
}

GREETINGS = ["Hi,", "Hello,", "Hi there,", "Hey,", "Good morning,", "Dear support,", "Hello team,", "hi", "Hiya,"]
SUBJECTS = ["Subject: Help", "Subject: Question", "Subject: Urgent", "Subject: Order {order}", "Re: my order", "Subject: Issue"]
CONTEXT = [
    "I'm a long-time customer.", "Sorry to bother you.", "Quick one.", "Hope you're well.",
    "Writing on behalf of my mother.", "This is my second message about this.", "I tried the help centre first.",
]
CLOSINGS = ["Thanks!", "Thanks in advance.", "Any help appreciated.", "Please advise.", "Cheers.", "Thank you.", "ty"]
SIGNOFFS = ["- {name}", "Regards, {name}", "Best, {name}", "{name}", "Sent from my phone"]
INFORMAL = [(r"\byou\b", "u"), (r"\bplease\b", "pls"), (r"\bthanks\b", "thx"), (r"\bI'm\b", "im"), (r"\bdon't\b", "dont")]

_SLOT = re.compile(r"\{(\w+)\}")


def fill(template: str, rng: random.Random, chosen: dict[str, str]) -> str:
    """Replace ``{slot}`` markers; a slot used twice in one ticket keeps one value."""

    def value(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in chosen:
            if key in ("n5", "n6", "card4"):  # numbers, drawn not listed
                digits = {"n5": 5, "n6": 6, "card4": 4}[key]
                chosen[key] = str(rng.randrange(10 ** (digits - 1), 10**digits))
            elif key in ("d2", "d3"):
                chosen[key] = str(rng.randrange(10, 100) if key == "d2" else rng.randrange(100, 400))
            else:
                chosen[key] = fill(rng.choice(SLOTS[key]), rng, chosen)
        return chosen[key]

    return _SLOT.sub(value, template)


def _capitalize(sentence: str) -> str:
    # Slots such as "the mobile app" can open a sentence.
    return sentence[:1].upper() + sentence[1:]


def typo(word: str, rng: random.Random) -> str:
    """Swap, drop or double one inner letter, the slips people make on a phone."""
    i = rng.randrange(1, len(word) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def roughen(text: str, rng: random.Random) -> str:
    """Make a ticket informal: lower case, chat abbreviations, no final full stops."""
    text = text.lower()
    for pattern, repl in INFORMAL:
        if rng.random() < 0.7:
            text = re.sub(pattern, repl, text, flags=re.IGNORECASE)
    return text.replace(". ", " ").rstrip(".")


def add_typos(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) >= 5]
    for i in rng.sample(candidates, k=min(len(candidates), rng.choice((1, 1, 2)))):
        words[i] = typo(words[i], rng)
    return " ".join(words)


def make_ticket(label: str, rng: random.Random) -> str:
    """Compose one ticket whose main request belongs to ``label``."""
    chosen: dict[str, str] = {}
    parts: list[str] = []
    if rng.random() < 0.08:
        parts.append(rng.choice(SUBJECTS) + "\n")
    if rng.random() < 0.45:
        parts.append(rng.choice(GREETINGS))
    if rng.random() < 0.2:
        parts.append(rng.choice(CONTEXT))
    # The harder rows: a remark about another topic, before or after the request.
    aside = rng.choice(ASIDE[rng.choice([x for x in LABELS if x != label])]) if rng.random() < 0.13 else None
    aside_first = rng.random() < 0.5
    if aside and aside_first:
        parts.append(aside)
    parts.append(rng.choice(CORE[label]))
    if rng.random() < 0.35:
        parts.append(rng.choice(DETAIL[label]))
    if aside and not aside_first:
        parts.append(aside)
    if rng.random() < 0.35:
        parts.append(rng.choice(CLOSINGS))
    if rng.random() < 0.2:
        parts.append(rng.choice(SIGNOFFS))
    text = " ".join(_capitalize(fill(p, rng, chosen)) for p in parts).replace("\n ", "\n")
    if rng.random() < 0.18:
        text = roughen(text, rng)
    if rng.random() < 0.2:
        text = add_typos(text, rng)
    return text


def generate(seed: int = SEED, rows_per_label: int = ROWS_PER_LABEL) -> list[dict[str, str]]:
    """Return the dataset rows: ``rows_per_label`` distinct tickets per label, shuffled."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    for label in LABELS:
        count = 0
        while count < rows_per_label:
            text = make_ticket(label, rng)
            if text in seen or not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                continue
            seen.add(text)
            rows.append({"instruction": INSTRUCTION, "input": text, "output": label})
            count += 1
    rng.shuffle(rows)
    return rows


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="Where to write the JSONL file.")
    parser.add_argument("--check", action="store_true", help="Only check that --out is up to date.")
    args = parser.parse_args(argv)
    rows = generate()
    text = render(rows)
    if args.check:
        same = args.out.exists() and args.out.read_text(encoding="utf-8") == text
        print(f"{args.out}: {'up to date' if same else 'STALE, regenerate it'}")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    counts = Counter(r["output"] for r in rows)
    words = [len(r["input"].split()) for r in rows]
    print(f"wrote {len(rows)} rows to {args.out}")
    print(f"words per ticket: min {min(words)}, mean {sum(words) / len(words):.1f}, max {max(words)}")
    for label in LABELS:
        print(f"  {label:17s} {counts[label]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
