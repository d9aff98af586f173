# SPDX-License-Identifier: MIT
# dare-stream.bash - bash completion for dare-stream(1)
#
# Subcommands, their options as "dare-stream CMD --help" prints them, the
# values of --method, --rescale, --dtype and --io, and file arguments: model
# paths (directories, .safetensors and .json files, and Hugging Face ids
# already in the local cache), recipe files (.yml, .yaml), output
# directories.  Self-contained: it needs bash 4 but not the bash-completion
# package.

_dare_stream_methods='linear task_arithmetic dare_linear dare_ties ties
	breadcrumbs breadcrumbs_ties della della_linear slerp nuslerp
	model_stock sce karcher passthrough'

# Hugging Face ids org/name of the local cache (models--org--name).
_dare_stream_hf_ids()
{
	local hub=${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}
	local d id
	for d in "$hub"/models--*--*; do
		[[ -d $d ]] || continue
		id=${d##*/models--}
		printf '%s\n' "${id/--//}"
	done
}

# _dare_stream_paths KIND CUR: directories, plus the files KIND takes.
_dare_stream_paths()
{
	local kind=$1 cur=$2 x
	compopt -o filenames 2>/dev/null
	while IFS= read -r x; do COMPREPLY+=("$x"); done < <(
		compgen -d -- "$cur"
		case $kind in
		model)
			compgen -f -X '!*.safetensors' -- "$cur"
			compgen -f -X '!*.json' -- "$cur"
			compgen -W "$(_dare_stream_hf_ids)" -- "$cur"
			;;
		recipe)
			compgen -f -X '!*.yml' -- "$cur"
			compgen -f -X '!*.yaml' -- "$cur"
			;;
		any) compgen -f -- "$cur" ;;
		esac
	)
}

_dare_stream()
{
	local cur=${COMP_WORDS[COMP_CWORD]} prev=
	local cmd= i opts
	COMPREPLY=()
	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	# "--opt=value": bash splits at '=' (COMP_WORDBREAKS), or not.
	if [[ $cur == --*=* ]]; then
		prev=${cur%%=*}
		cur=${cur#*=}
	elif [[ $cur == = ]]; then
		cur=
	elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then
		prev=${COMP_WORDS[COMP_CWORD - 2]}
	fi

	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
		merge | inspect | verify | finalize | extract | apply | delta-stats)
			cmd=${COMP_WORDS[i]}; break ;;
		esac
	done

	case $cmd in
	'')
		COMPREPLY=($(compgen -W 'merge inspect verify finalize extract apply
			delta-stats -h --help -V --version' -- "$cur"))
		return 0
		;;
	merge)
		case $prev in
		-o | --output) _dare_stream_paths dir "$cur"; return 0 ;;
		--base | --model) _dare_stream_paths model "$cur"; return 0 ;;
		--config) _dare_stream_paths recipe "$cur"; return 0 ;;
		--method)
			COMPREPLY=($(compgen -W "$_dare_stream_methods" -- "$cur"))
			return 0
			;;
		--rescale) COMPREPLY=($(compgen -W 'inverse l1 none' -- "$cur")); return 0 ;;
		--dtype) COMPREPLY=($(compgen -W 'bf16 f16 f32' -- "$cur")); return 0 ;;
		--io) COMPREPLY=($(compgen -W 'uring pread' -- "$cur")); return 0 ;;
		--weight | --weights | -p | --drop-rate | --drop-rates | \
			--density | --densities | --lambda | --seed | --exclude | \
			--memory | --threads | --gamma | --gammas | --epsilon | \
			--epsilons | --t | --select-topk | --max-iter | --tol | \
			--scale | --shard-size | --partition)
			return 0 # a value: nothing to offer
			;;
		esac
		opts='-o --output --base --model --config --method --weight
			--weights -p --drop-rate --drop-rates --density --densities
			--gamma --gammas --epsilon --epsilons --t --filter-wise
			--select-topk --max-iter --tol --no-nuslerp-flatten
			--nuslerp-row-wise --scale
			--lambda --normalize --no-normalize --rescale --seed --dtype
			--exclude --shard-size --memory --threads --io --force
			--resume --partition --dry-run --progress -q --quiet -h
			--help'
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		;;
	inspect)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W '--json -h --help' -- "$cur"))
		else
			_dare_stream_paths model "$cur"
		fi
		;;
	verify)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W '-v --verbose -h --help' -- "$cur"))
		else
			_dare_stream_paths dir "$cur"
		fi
		;;
	finalize)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W '-q --quiet -h --help' -- "$cur"))
		else
			_dare_stream_paths dir "$cur"
		fi
		;;
	extract | apply | delta-stats)
		_dare_stream_paths any "$cur"
		;;
	esac
	return 0
}
complete -F _dare_stream dare-stream
