// The pages the links in Mint's emails open (/verify-email, /reset-password).
// The token is read here from the URL and never written into the page. Opening
// a page changes nothing (mail scanners prefetch links): only the button or
// the form does, by a same-origin POST to the JSON API.
(() => {
	const TOKEN = /^[A-Za-z0-9_-]{10,200}$/;
	const status = document.getElementById("status");
	const token = new URLSearchParams(window.location.search).get("token") ?? "";

	function say(message, state) {
		status.textContent = message;
		status.dataset.state = state;
	}

	/** The API's answer: its status (0 when Mint could not be reached), its JSON body and Retry-After. */
	async function post(path, body) {
		try {
			const res = await fetch(path, {
				method: "POST",
				headers: { "Content-Type": "application/json", Accept: "application/json" },
				credentials: "same-origin",
				cache: "no-store",
				body: JSON.stringify(body),
			});
			const payload = await res.json().catch(() => null);
			return { status: res.status, body: payload, retryAfter: res.headers.get("Retry-After") };
		} catch {
			return { status: 0, body: null, retryAfter: null };
		}
	}

	const problemsOf = answer => (Array.isArray(answer.body?.error?.details) ? answer.body.error.details : []);
	const isTokenProblem = answer => answer.status === 400 && problemsOf(answer).some(problem => problem.path === "token");

	/** What to say when the API did not do it for a reason other than the token or the fields. */
	function unavailable(answer) {
		if (answer.status === 0) return "Mint could not be reached. Check your connection and try again.";
		if (answer.status === 429 || answer.status === 503) return `Mint is busy right now. Try again in ${answer.retryAfter ?? "a few"} seconds.`;
		return `Something went wrong (error ${answer.status}). Try again later.`;
	}

	function verifyEmail() {
		const form = document.getElementById("verify-form");
		const button = document.getElementById("verify-button");
		if (!TOKEN.test(token)) {
			say("This verification link is incomplete or invalid. Open the link from your email again.", "error");
			return;
		}
		form.hidden = false;
		form.addEventListener("submit", async event => {
			event.preventDefault();
			button.disabled = true;
			say("Verifying…", "pending");
			const answer = await post("/api/v1/auth/verify-email", { token });
			if (answer.status === 200) {
				form.hidden = true;
				say("Thank you: your email address is verified. You can close this page.", "success");
			} else if (isTokenProblem(answer)) {
				form.hidden = true;
				say("This verification link is invalid, has expired or was already used.", "error");
			} else {
				button.disabled = false;
				say(unavailable(answer), "error");
			}
		});
	}

	function resetPassword() {
		const form = document.getElementById("reset-form");
		const button = document.getElementById("reset-button");
		const password = document.getElementById("password");
		const confirmation = document.getElementById("password-confirm");
		const expired = "This reset link is invalid, has expired or was already used. Ask for a new one from Mint's login page (Forgot password).";
		if (!TOKEN.test(token)) {
			say(expired, "error");
			return;
		}
		form.hidden = false;
		form.addEventListener("submit", async event => {
			event.preventDefault();
			if (password.value.length < 8 || password.value.length > 128) {
				say("The password must be 8 to 128 characters long.", "error");
				return;
			}
			if (password.value !== confirmation.value) {
				say("The two passwords are not the same.", "error");
				return;
			}
			button.disabled = true;
			say("Saving…", "pending");
			const answer = await post("/api/v1/auth/password/reset", { token, password: password.value, passwordConfirm: confirmation.value });
			if (answer.status === 200) {
				form.reset();
				form.hidden = true;
				say("Your password has been changed and every device was signed out. Log in to Mint with your new password.", "success");
			} else if (isTokenProblem(answer)) {
				form.hidden = true;
				say(expired, "error");
			} else {
				button.disabled = false;
				const problems = problemsOf(answer).map(problem => problem.message);
				say(answer.status === 400 && problems.length ? problems.join(" ") : unavailable(answer), "error");
			}
		});
	}

	if (document.body.dataset.page === "verify-email") verifyEmail();
	else if (document.body.dataset.page === "reset-password") resetPassword();
})();
